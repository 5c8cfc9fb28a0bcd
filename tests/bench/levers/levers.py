#!/usr/bin/env python3
"""The writer's CPU per hold, shape by shape: what each lever of issue 23 gives, measured with a C
client (mariadb-slap, the text protocol, no application at all) against the local MariaDB.

Every shape makes holds of one unit of one product (one stock row, no contention but the hot
row's) from N concurrent connections; a round of each shape runs in turn (A, B, C, A, B, C, ...)
and each is reported by the medians of its rounds: holds/s, and the database server's CPU per hold
(utime + stime of mariadbd from /proc, all of its threads) beside the row-lock design's.

  python3 tests/bench/levers/levers.py                 # 64 clients, 3 rounds, 12,800 holds a round
  python3 tests/bench/levers/levers.py --big 1000000   # also: random and time-ordered ids, on a
                                                       # holds table already holding that many rows

Needs: mariadb-slap and the mariadb client, one mariadbd on this machine (root, no password, on
127.0.0.1:3306 unless --host/--port), and the service's migrations, applied by flash-sale-local
(the release build, else the debug one, built if neither is there). Creates the database
flash_sale_levers and drops it. `--smoke` is CI's: every shape once, tiny, to prove it runs.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

DATABASE = "flash_sale_levers"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

# A random (v4-shaped) id and a time-ordered (v7-shaped) one, made by the server: every shape
# below makes its ids the same way, so their cost is the same in each.
RANDOM_ID = "LOWER(INSERT(INSERT(INSERT(INSERT(HEX(RANDOM_BYTES(16)),9,0,'-'),14,0,'-'),19,0,'-'),24,0,'-'))"
ORDERED_ID = "CONCAT(LPAD(LOWER(HEX(FLOOR(UNIX_TIMESTAMP(NOW(6))*1000000))),14,'0'),'-',LOWER(HEX(RANDOM_BYTES(10))))"
BUYER = "'buyer-1'"
# A buyer of their own for every hold: the per-buyer limit's count finds nothing, as for most
# buyers of a sale (a limit keeps each buyer's rows few).
NEW_BUYER = "CONCAT('buyer-', LOWER(HEX(RANDOM_BYTES(8))))"

ROWLOCK = (
    "BEGIN;"
    "SELECT available FROM rowlock_products WHERE id = 1 FOR UPDATE;"
    "UPDATE rowlock_products SET available = available - 1, reserved = reserved + 1 WHERE id = 1;"
    "INSERT INTO rowlock_holds (product_id, qty, status, created_at, expires_at) "
    "VALUES (1, 1, 'active', UTC_TIMESTAMP(3), UTC_TIMESTAMP(3) + INTERVAL 600 SECOND);"
    "COMMIT"
)


def service_call(hold_id, product=1, buyer=BUYER):
    return f"CALL reserve_hold_v2({hold_id}, {product}, {buyer}, 1, NULL, 600000, 0, 0)"


def trigger_insert(table, hold_id):
    return (
        f"INSERT INTO {table} (id, product_id, buyer_id, bucket, qty, status, created_at, expires_at) "
        f"VALUES ({hold_id}, 1, {BUYER}, 0, 1, 'active', UTC_TIMESTAMP(3), UTC_TIMESTAMP(3) + INTERVAL 600 SECOND)"
    )


def shapes(big):
    """(name, what it shows, statements per hold, the table its holds land in, the query)."""
    listed = [
        ("rowlock (C client)", "the classic design: 5 round trips, the lock held across 3",
         5, "rowlock_holds", ROWLOCK),
        ("hot UPDATE alone", "the floor: one autocommitted UPDATE of the hot row, no hold row",
         1, None, "UPDATE stock_buckets SET available_stock = available_stock - 1, "
                  "reserved_stock = reserved_stock + 1 WHERE product_id = 1 AND bucket = 0 "
                  "AND available_stock >= 1"),
        ("service: reserve_hold_v2", "the service's hold with random ids, as before UUIDv7",
         1, "holds", service_call(RANDOM_ID)),
        ("  + time-ordered ids", "the same with ids sorted by time, as the service makes them now",
         1, "holds", service_call(ORDERED_ID)),
        ("  + per-buyer limit", "reserve_hold_v2 on a product with a limit: each hold a new buyer",
         1, "holds", service_call(ORDERED_ID, product=2, buyer=NEW_BUYER)),
        ("procedure: terms + hold", "a procedure that reads the terms, then inserts, updates, commits",
         1, "holds", f"CALL hold_bare_with_terms({ORDERED_ID}, {BUYER})"),
        ("procedure: terms + limit by sums", "terms + hold, with v2's limit: the buyer's row, two sums",
         1, "holds", f"CALL hold_limited_by_sums({ORDERED_ID}, {NEW_BUYER})"),
        ("procedure: terms + limit, one sum", "the same, both sums in one statement",
         1, "holds", f"CALL hold_limited_by_one_sum({ORDERED_ID}, {NEW_BUYER})"),
        ("procedure: terms + limit by counter", "the same limit from a counter row: one statement",
         1, "holds", f"CALL hold_limited_by_counter({ORDERED_ID}, {NEW_BUYER})"),
        ("procedure: terms + hold, checked", "terms + hold with v2's checks and answer (window, bucket, outcome)",
         1, "holds", f"CALL hold_checked({ORDERED_ID}, {BUYER})"),
        ("procedure: bare, 5 indexes", "no terms read, no limit, no walk: the least a procedure does",
         1, "holds", f"CALL hold_bare({ORDERED_ID}, {BUYER}, 5)"),
        ("procedure: bare, 3 indexes", "without the sweeper's and the buyer limit's indexes",
         1, "holds_three_indexes", f"CALL hold_bare({ORDERED_ID}, {BUYER}, 3)"),
        ("procedure: bare, 2 indexes", "also without the Idempotency-Key's unique index",
         1, "holds_two_indexes", f"CALL hold_bare({ORDERED_ID}, {BUYER}, 2)"),
        ("one INSERT + trigger", "HOT-PATH.md's one-statement shape, autocommit, 5 indexes",
         1, "holds_by_trigger", trigger_insert("holds_by_trigger", ORDERED_ID)),
    ]
    if big:
        listed += [
            (f"trigger, {big:,} rows, random ids", "a holds table past the buffer pool, random keys",
             1, "big_random", trigger_insert("big_random", RANDOM_ID)),
            (f"trigger, {big:,} rows, ordered ids", "the same, keys in time order",
             1, "big_ordered", trigger_insert("big_ordered", ORDERED_ID)),
        ]
    return listed


class Server:
    def __init__(self, host, port):
        self.args = ["-uroot", f"-h{host}", f"-P{port}"]
        pids = subprocess.run(["pidof", "mariadbd"], capture_output=True, text=True).stdout.split()
        if len(pids) != 1:
            sys.exit(f"levers: needs exactly one local mariadbd, found {len(pids)}")
        self.pid = pids[0]

    def sql(self, statement, database=DATABASE):
        done = subprocess.run(["mariadb", *self.args, "-N", "-B", database, "-e", statement],
                              capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"levers: {statement[:80]}…: {done.stderr.strip()}")
        return done.stdout.strip()

    def cpu_seconds(self):
        with open(f"/proc/{self.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        # utime and stime, fields 14 and 15 of stat(5), counted from after the command name.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def statements(self):
        return int(self.sql("SHOW GLOBAL STATUS LIKE 'Questions'").split()[1])


def prepare(server, big):
    server.sql(f"DROP DATABASE IF EXISTS {DATABASE}; CREATE DATABASE {DATABASE}", database="")
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    builds = [os.path.join(target, profile, "flash-sale-local") for profile in ("release", "debug")]
    local = next((build for build in builds if os.path.exists(build)), builds[1])
    if not os.path.exists(local):
        subprocess.run(["cargo", "build", "--bin", "flash-sale-local"], cwd=ROOT, check=True)
    host, port = server.args[1][2:], server.args[2][2:]
    env = dict(os.environ, DATABASE_URL=f"mysql://root@{host}:{port}/{DATABASE}")
    subprocess.run([local, "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "levers.sql")) as sql:
        subprocess.run(["mariadb", *server.args, DATABASE], stdin=sql, check=True)
    # Product 1: the hot one, one bucket, units enough for every round. Product 2: the same with
    # a per-buyer limit of 2.
    server.sql(
        "DELETE FROM stock_buckets; DELETE FROM products;"
        "INSERT INTO products (id, name, price_cents, total_stock, stock_buckets, max_per_buyer, created_at) VALUES "
        "(1, 'hot', 100, 100000000, 1, NULL, UTC_TIMESTAMP(3)), (2, 'limited', 100, 100000000, 1, 2, UTC_TIMESTAMP(3));"
        "INSERT INTO stock_buckets (product_id, bucket, total_stock, available_stock) VALUES "
        "(1, 0, 100000000, 100000000), (2, 0, 100000000, 100000000);"
        "INSERT INTO rowlock_products (id, available, reserved) VALUES (1, 100000000, 0)"
    )
    if big:
        for table, hold_id in (("big_random", RANDOM_ID), ("big_ordered", ORDERED_ID)):
            print(f"filling {table} with {big:,} holds…", end=" ", flush=True)
            started, cpu = time.monotonic(), server.cpu_seconds()
            server.sql(
                f"CREATE TABLE {table} LIKE holds;"
                f"INSERT INTO {table} (id, product_id, buyer_id, bucket, qty, status, created_at, expires_at) "
                f"SELECT {hold_id.replace('NOW(6)', 'NOW(6) - INTERVAL 1 DAY + INTERVAL seq MICROSECOND')}, "
                "3, CONCAT('buyer-', seq MOD 1000), 0, 1, 'expired', UTC_TIMESTAMP(3), UTC_TIMESTAMP(3) "
                f"FROM seq_1_to_{big};"
                # The trigger comes after the rows: they are history, not holds of product 1.
                f"CREATE TRIGGER {table}_reserve BEFORE INSERT ON {table} FOR EACH ROW "
                "UPDATE stock_buckets SET available_stock = available_stock - NEW.qty, "
                "reserved_stock = reserved_stock + NEW.qty "
                "WHERE product_id = NEW.product_id AND bucket = NEW.bucket AND available_stock >= NEW.qty"
            )
            print(f"{time.monotonic() - started:.0f} s, mariadbd {server.cpu_seconds() - cpu:.0f} s of CPU",
                  flush=True)


def count(server, table):
    if table is None:
        return int(server.sql("SELECT reserved_stock FROM stock_buckets WHERE product_id = 1"))
    return int(server.sql(f"SELECT COUNT(*) FROM {table}"))


def round_of(server, shape, clients, holds):
    name, _, statements, table, query = shape
    before = count(server, table)
    cpu, questions, started = server.cpu_seconds(), server.statements(), time.monotonic()
    slap = subprocess.run(
        ["mariadb-slap", *server.args, f"--create-schema={DATABASE}", "--no-drop",
         f"--concurrency={clients}", "--iterations=1",
         # The service's sessions run at READ COMMITTED (shared::store::db::connect), and so do
         # the bench's baselines.
         "--init-command=SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
         f"--number-of-queries={holds * statements}", "--delimiter=;", f"--query={query}"],
        capture_output=True, text=True)
    elapsed = time.monotonic() - started
    cpu, questions = server.cpu_seconds() - cpu, server.statements() - questions
    if slap.returncode != 0:
        sys.exit(f"levers: {name}: {slap.stderr.strip()}")
    made = count(server, table) - before
    if made <= 0:
        sys.exit(f"levers: {name}: no hold made")
    return {"per_second": made / elapsed, "db_ms": cpu * 1000 / made, "stmts": questions / made}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--holds", type=int, default=12_800, help="holds per round of each shape")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--big", type=int, default=0, help="also random against time-ordered ids, on holds tables already holding this many rows")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", default="3306")
    parser.add_argument("--smoke", action="store_true",
                        help="what CI runs: every shape once, 8 clients, 320 holds; measures nothing")
    args = parser.parse_args()
    if args.smoke:
        args.clients, args.holds, args.runs = 8, 320, 1
    for tool in ("mariadb-slap", "mariadb", "pidof"):
        if shutil.which(tool) is None:
            sys.exit(f"levers: {tool} not found")
    server = Server(args.host, args.port)
    prepare(server, args.big)
    listed = shapes(args.big)
    rounds = {shape[0]: [] for shape in listed}
    try:
        for run in range(1, args.runs + 1):
            for shape in listed:
                result = round_of(server, shape, args.clients, args.holds)
                rounds[shape[0]].append(result)
                print(f"{run}/{args.runs} {shape[0]:<36} {result['per_second']:>8.0f} holds/s "
                      f"{result['db_ms']:.3f} db ms/hold", flush=True)
    finally:
        server.sql(f"DROP DATABASE IF EXISTS {DATABASE}", database="")

    def median(name, key):
        return statistics.median(round[key] for round in rounds[name])

    reference = median(listed[0][0], "db_ms")
    print(f"\n{args.clients} clients, one stock row, {args.holds:,} holds a round, "
          f"medians of {args.runs} alternating rounds (mariadb-slap, text protocol)")
    print(f"{'shape':<36} {'holds/s':>8} {'db ms':>7} {'vs rowlock':>10} {'stmts':>6}  what it shows")
    for name, shows, *_ in listed:
        db_ms = median(name, "db_ms")
        print(f"{name:<36} {median(name, 'per_second'):>8.0f} {db_ms:>7.3f} "
              f"{db_ms / reference:>9.2f}x {median(name, 'stmts'):>6.2f}  {shows}")
    print("db ms: mariadbd's CPU (all threads, user + system) per hold made; stmts: the server's "
          "Questions per hold (a CALL counts once, its body not at all)")


if __name__ == "__main__":
    main()
