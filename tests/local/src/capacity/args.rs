//! `capacity`'s flags: the sale they describe, or what is wrong with them; and `capacity --help`.

use super::limits::{LIMITS, provisioned};
use super::render::num;
use super::sale::{
    FUNCTIONS, LOCK_MS_PER_HOLD, ORDER_COST_IN_HOLDS, Sale, WRITER_MS_PER_HOLD, WRITER_MS_PER_READ,
};

/// `capacity`'s flags; `Err` names what is wrong with them.
pub fn parse(args: &[String]) -> Result<Sale, String> {
    let mut sale = Sale::new(f64::NAN, f64::NAN);
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let flag = flag.as_str();
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        let mut read = |low: f64, high: f64| number(flag, value()?, low, high);
        let (any, share) = (f64::MAX, 1.0);
        let positive = f64::MIN_POSITIVE;
        match flag {
            "--holds-per-second" => sale.holds_per_second = read(positive, any)?,
            "--visitors" => sale.visitors = read(0.0, any)?,
            "--products" => sale.products = read(1.0, any)?.ceil(),
            "--hold-ttl" => sale.hold_ttl_seconds = read(positive, any)?,
            "--order-ttl" => sale.order_ttl_seconds = read(positive, any)?,
            "--peak-seconds" => sale.peak_seconds = read(positive, any)?,
            "--order-share" => sale.order_share = read(0.0, share)?,
            "--hot-share" => sale.hot_share = read(positive, share)?,
            "--poll-seconds" => sale.poll_seconds = read(positive, any)?,
            "--edge-caches" => sale.edge_caches = read(0.0, any)?,
            "--writer-ms-per-hold" => sale.writer_ms_per_hold = read(positive, any)?,
            "--writer-ms-per-order" => sale.writer_ms_per_order = Some(read(positive, any)?),
            "--writer-ms-per-read" => sale.writer_ms_per_read = read(0.0, any)?,
            "--lock-ms-per-hold" => sale.lock_ms_per_hold = read(positive, any)?,
            "--db-rtt-ms" => sale.db_rtt_ms = read(0.0, any)?,
            "--vcpus-per-acu" => sale.vcpus_per_acu = read(positive, any)?,
            "--writer-cpu-max" => sale.writer_cpu_max = read(positive, share)?,
            "--bucket-busy-max" => sale.bucket_busy_max = read(positive, share)?,
            "--waiting-room" => sale.waiting_room = true,
            "--region" => sale.region = region(value()?)?,
            "--instance-class" => sale.instance_class = instance_class(value()?)?,
            "--duration-ms" => {
                let (index, ms) = named(flag, value()?, &FUNCTIONS.map(|function| function.0))?;
                sale.durations_ms[index] = ms;
            }
            "--quota" => {
                let (index, limit) = named(flag, value()?, &LIMITS.map(|about| about.0))?;
                sale.quotas[index] = Some(limit);
            }
            other => return Err(format!("unknown argument {other:?} of capacity")),
        }
    }
    if sale.holds_per_second.is_nan() {
        return Err("capacity needs --holds-per-second".to_owned());
    }
    if sale.visitors.is_nan() {
        return Err("capacity needs --visitors".to_owned());
    }
    Ok(sale)
}

fn number(flag: &str, value: &str, low: f64, high: f64) -> Result<f64, String> {
    value
        .parse::<f64>()
        .ok()
        .filter(|number| number.is_finite() && *number >= low && *number <= high)
        .ok_or_else(|| format!("{flag} takes a number from {low} to {high}, got {value:?}"))
}

fn instance_class(value: &str) -> Result<String, String> {
    if value == "db.serverless" || provisioned(value).is_some() {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "--instance-class takes db.serverless or a db.r*.<size> class, got {value:?}"
        ))
    }
}

/// `NAME=NUMBER`: the name's index among `names`, the number positive.
fn named(flag: &str, value: &str, names: &[&str]) -> Result<(usize, f64), String> {
    let (name, number) = value
        .split_once('=')
        .and_then(|(name, number)| Some((name, number.parse::<f64>().ok()?)))
        .filter(|(_, number)| number.is_finite() && *number > 0.0)
        .ok_or_else(|| format!("{flag} takes NAME=NUMBER, a positive number, got {value:?}"))?;
    let index = names
        .iter()
        .position(|known| *known == name)
        .ok_or_else(|| format!("{flag} takes one of {}, got {name:?}", names.join(", ")))?;
    Ok((index, number))
}

/// An AWS region's shape: `us-east-1`, `us-gov-west-1`.
fn region(value: &str) -> Result<String, String> {
    let parts: Vec<&str> = value.split('-').collect();
    let lower = |part: &&str| !part.is_empty() && part.chars().all(|c| c.is_ascii_lowercase());
    let shaped = parts.len() >= 3
        && parts[..parts.len() - 1].iter().all(lower)
        && parts[parts.len() - 1].parse::<u8>().is_ok();
    if shaped {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "--region takes an AWS region such as us-east-1, got {value:?}"
        ))
    }
}

/// `capacity --help`.
pub fn usage() -> String {
    let functions: String = FUNCTIONS
        .iter()
        .map(|(name, ms, _)| format!("    {name:<31}{} ms\n", num(*ms)))
        .collect();
    let limits: String = LIMITS
        .iter()
        .map(|(key, name, _)| format!("    {key:<31}{name}\n"))
        .collect();
    let lock = num(LOCK_MS_PER_HOLD);
    format!(
        "\
flash-sale-local capacity: the AWS capacity plan of a flash sale, and the quotas to raise first.

Usage:
  flash-sale-local capacity --holds-per-second N --visitors N [flags]

The sale:
  --holds-per-second N      hold requests a second at the peak (required)
  --visitors N              people on the sale's page at once (required)
  --products N              products on sale (1)
  --region R                the stack's region, for its default quotas (us-east-1)
  --hold-ttl S              HOLD_TTL_SECONDS (120)
  --order-ttl S             ORDER_PAYMENT_TTL_SECONDS + PAYMENT_GRACE_SECONDS (1200)
  --peak-seconds S          how long the peak lasts (60)
  --order-share F           share of holds redeemed into orders, each paid by a webhook (0.5)
  --hot-share F             share of the holds that go to the hottest product (1)
  --poll-seconds S          each visitor's page asks once per S seconds (5)
  --waiting-room            the sale has a waiting room: each poll also reads the buyer's entry
  --edge-caches N           CloudFront caches asking the origin for a product each second (20;
                            1 with Origin Shield)

What things cost (defaults from tests/bench/README.md: a 2-vCPU machine, not AWS):
  --writer-ms-per-hold MS   the writer's CPU per hold ({WRITER_MS_PER_HOLD})
  --writer-ms-per-order MS  per order and its payment ({ORDER_COST_IN_HOLDS} holds)
  --writer-ms-per-read MS   per uncached read ({WRITER_MS_PER_READ})
  --lock-ms-per-hold MS     how long a hold locks its stock bucket (at most {lock})
  --db-rtt-ms MS            a round trip from a function to the database (1)
  --vcpus-per-acu N         an assumption: AWS publishes 2 GiB an ACU, not its CPU (0.25)
  --writer-cpu-max F        the writer's CPU may be this busy at the peak (0.7)
  --bucket-busy-max F       a stock bucket may be locked this share of the time (0.5)
  --instance-class C        db.serverless (the stack's), or the db.r*.* class of your writer
  --duration-ms FUNCTION=MS a function's duration, assumed until measured on AWS:
{functions}  --quota KEY=VALUE         a limit, instead of its default for the region:
{limits}
Exit status: 0 everything fits, 1 some limit must be raised first, 2 a usage error.
"
    )
}

/// A command line's words after `capacity`, as the binary passes them.
#[cfg(test)]
pub(super) fn args(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::limits::SCHEDULES;
    use crate::capacity::sale::CREATE_HOLD;

    #[test]
    fn flags_set_the_sale() {
        let sale = parse(&args(
            "--holds-per-second 2000 --visitors 50000 --products 3 --region eu-west-1 --hold-ttl 60 \
             --order-share 0.8 --waiting-room --writer-ms-per-hold 0.34 --lock-ms-per-hold 0.2 \
             --instance-class db.r6g.4xlarge --duration-ms create-hold=25 --quota schedules=5",
        ))
        .expect("flags");
        assert_eq!(
            (sale.holds_per_second, sale.visitors, sale.products),
            (2_000.0, 50_000.0, 3.0)
        );
        assert_eq!(
            (
                sale.region.as_str(),
                sale.hold_ttl_seconds,
                sale.order_share
            ),
            ("eu-west-1", 60.0, 0.8)
        );
        assert!(sale.waiting_room);
        assert_eq!(
            (sale.writer_ms_per_hold, sale.lock_ms_per_hold),
            (0.34, 0.2)
        );
        assert_eq!(sale.instance_class, "db.r6g.4xlarge");
        assert_eq!(sale.durations_ms[CREATE_HOLD], 25.0);
        assert_eq!(sale.limits()[SCHEDULES], 5.0);
    }

    #[test]
    fn bad_flags_are_named() {
        for (line, named) in [
            ("--visitors 10", "--holds-per-second"),
            ("--holds-per-second 10", "--visitors"),
            ("--holds-per-second 10 --visitors 1 --fast", "\"--fast\""),
            ("--holds-per-second ten --visitors 1", "\"ten\""),
            (
                "--holds-per-second 0 --visitors 1",
                "--holds-per-second takes",
            ),
            (
                "--holds-per-second 10 --visitors 1 --order-share 1.5",
                "\"1.5\"",
            ),
            (
                "--holds-per-second 10 --visitors 1 --region mars",
                "\"mars\"",
            ),
            (
                "--holds-per-second 10 --visitors 1 --quota lambda=5",
                "\"lambda\"",
            ),
            (
                "--holds-per-second 10 --visitors 1 --quota api-rps",
                "NAME=NUMBER",
            ),
            (
                "--holds-per-second 10 --visitors 1 --duration-ms sweeper=5",
                "\"sweeper\"",
            ),
            (
                "--holds-per-second 10 --visitors 1 --instance-class db.t3.small",
                "\"db.t3.small\"",
            ),
            (
                "--holds-per-second 10 --visitors",
                "--visitors needs a value",
            ),
        ] {
            let problem = parse(&args(line)).expect_err(line);
            assert!(problem.contains(named), "{line}: {problem}");
        }
    }
}
