//! `flash-sale-local capacity`: the AWS capacity plan of a flash sale. From a few figures about
//! the sale (holds a second, visitors, products, region, hold TTL) and what a hold costs the
//! writer, it derives every rate the stack sees at the peak (Little's law for concurrency: rate ×
//! duration), compares each with its limit, and lists what must be raised before the sale.
//! Limits are AWS's published defaults for the region (each cited where it is defined) or the
//! stack's own settings (`template.yaml`); every figure and limit can be overridden.
//!
//! The flags (`args.rs`) make a [`Sale`], every figure defaulted (`sale.rs`); its limits come from
//! `limits.rs`; [`plan()`] (`plan.rs`) derives a [`Plan`] of figures (`figures.rs`), and
//! [`render()`] (`render.rs`) prints it.

mod args;
mod figures;
mod limits;
mod plan;
mod render;
mod sale;

pub use args::{parse, usage};
pub use figures::{Check, Lambda, Plan};
pub use limits::{LIMITS, Raise};
pub use plan::plan;
pub use render::render;
pub use sale::Sale;

#[cfg(test)]
mod tests {
    use super::*;
    use args::args;

    #[test]
    fn the_worked_example_lists_what_to_raise_by_key_and_name() {
        let sale = parse(&args("--holds-per-second 5000 --visitors 200000")).expect("flags");
        let plan = plan(&sale);
        let keys: Vec<&str> = plan.exceeded().iter().map(|check| check.key()).collect();
        assert_eq!(
            keys,
            [
                "api-rps",
                "api-route-rps",
                "create-schedule-tps",
                "delete-schedule-tps",
                "scheduler-invocations-tps",
                "processor-max-concurrency",
                "database-max-acu",
            ]
        );
        let text = render(&sale, &plan);
        assert!(
            text.contains("  - EventBridge Scheduler: CreateSchedule request rate\n"),
            "{text}"
        );
        assert!(
            text.contains("deploy with ApiThrottlingRateLimit=5000"),
            "{text}"
        );
        assert!(
            text.contains("deploy with DatabaseMaxCapacity=69.5"),
            "{text}"
        );
    }

    #[test]
    fn a_quota_raised_by_a_flag_is_no_longer_listed_and_a_small_sale_fits() {
        let raised = parse(&args(
            "--holds-per-second 5000 --visitors 200000 --quota api-rps=20000 \
             --quota api-route-rps=6000 --quota create-schedule-tps=10000 \
             --quota delete-schedule-tps=3000 --quota scheduler-invocations-tps=3000 \
             --quota processor-max-concurrency=100 --quota database-max-acu=128",
        ))
        .expect("flags");
        assert!(plan(&raised).exceeded().is_empty());
        let small = parse(&args("--holds-per-second 100 --visitors 1000")).expect("flags");
        let plan = plan(&small);
        assert!(plan.exceeded().is_empty(), "{:?}", plan.exceeded());
        assert!(render(&small, &plan).ends_with("Every figure is within its limit.\n"));
    }
}
