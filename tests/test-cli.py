#!/usr/bin/python3
"""Integration test of the cardledger CLI: every subcommand once against the real daemon.

Starts cardledgerd on ipc:// endpoints in a temporary directory with a test clock, then runs
the CLI (CARDLEDGER_BUILD_ROOT/client/cardledger) the way an operator would: human output is
checked for its key sentences, --json output must parse and carry the status and the result,
and exit codes must tell usage (1), unreachable (2) and refused (3) apart. issue-batch runs on
a CSV with a byte-order mark and quoted fields; running it again issues nothing twice.
cardledger-projector runs beside the daemon (--journal its data directory, --subscribe its PUB,
--listen ipc://), and every projector query of the CLI runs once against a small scripted
history of its own merchant, after polling `projections status` until the projections reach
the daemon's head.
The last line of output is "N passed, N failed".
"""

import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_ROOT = os.environ.get("CARDLEDGER_SOURCE_ROOT") or os.path.dirname(HERE)
BUILD_ROOT = os.environ.get("CARDLEDGER_BUILD_ROOT") or os.path.join(SOURCE_ROOT, "build")
CLI = os.path.join(BUILD_ROOT, "client", "cardledger")
DAEMON = os.path.join(BUILD_ROOT, "daemon", "cardledgerd")
PROJECTOR = os.path.join(BUILD_ROOT, "projections", "cardledger-projector")
CLOCK_START_US = 1767225600000000  # 2026-01-01T00:00:00Z


class CaseFailed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise CaseFailed(what)


class Env:
    def __init__(self, tmp):
        self.tmp = tmp
        self.endpoint = "ipc://" + os.path.join(tmp, "cmd.sock")
        self.projector = "ipc://" + os.path.join(tmp, "query.sock")
        pub = "ipc://" + os.path.join(tmp, "pub.sock")
        self.proc = subprocess.Popen([
            DAEMON, "--data", os.path.join(tmp, "data"), "--listen", self.endpoint,
            "--publish", pub, "--test-clock", str(CLOCK_START_US)])
        self.proj = subprocess.Popen([
            PROJECTOR, "--journal", os.path.join(tmp, "data"), "--data",
            os.path.join(tmp, "proj"), "--subscribe", pub, "--listen", self.projector,
            "--log-level", "warn"])
        self.state = {}

    def run(self, *args, want=0, stdin=None, env_connect=False):
        """Runs the CLI; checks its exit code; returns (stdout, stderr)."""
        argv = [CLI]
        env = dict(os.environ)
        if env_connect:
            env["CARDLEDGER_CONNECT"] = self.endpoint
        else:
            argv += ["--connect", self.endpoint, "--projector", self.projector]
        argv += list(args)
        p = subprocess.run(argv, capture_output=True, text=True, input=stdin, env=env,
                           timeout=120)
        if p.returncode != want:
            raise CaseFailed("%s: exit %d, wanted %d\nstdout: %s\nstderr: %s" % (
                " ".join(args), p.returncode, want, p.stdout, p.stderr))
        return p.stdout, p.stderr

    def json(self, *args, want=0):
        """Runs the CLI with --json; returns the one parsed object (or the list of them)."""
        out, err = self.run("--json", *args, want=want)
        objs = [json.loads(line) for line in out.splitlines() if line.strip()]
        check(len(objs) >= 1, "%s printed no JSON (stderr: %s)" % (" ".join(args), err))
        for o in objs:
            check("status" in o and "message" in o and "request_id" in o,
                  "every JSON reply has status, message and request_id")
        return objs[0] if len(objs) == 1 else objs

    def wait_ready(self):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("cardledgerd exited with %d" % self.proc.returncode)
            p = subprocess.run([CLI, "--connect", self.endpoint, "--timeout-ms", "200",
                                "--retries", "0", "status"], capture_output=True)
            if p.returncode == 0:
                return
        raise RuntimeError("cardledgerd did not answer")

    @staticmethod
    def s_stop(proc):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                return -1
        return proc.returncode

    def stop(self):
        """Stops the projector, then the daemon; returns both exit statuses."""
        return self.s_stop(self.proj), self.s_stop(self.proc)


# ---- cases ------------------------------------------------------------------------------------

def help_and_version_work_on_every_level(env):
    out, _ = env.run("--version")
    check(re.match(r"cardledger \d+\.\d+\.\d+", out), "--version prints the version")
    out, _ = env.run("--help")
    for word in ("issue-batch", "redeem", "gift offer", "Exit codes", "could not reach"):
        check(word in out, "--help mentions %r" % word)
    for group in ("gift", "program", "card", "request", "merchant", "store", "clock",
                  "projections"):
        out, _ = env.run(group, "--help")
        check("Subcommands" in out, "%s --help lists subcommands" % group)
    for cmd in (["issue"], ["issue-batch"], ["redeem"], ["reverse"], ["reload"], ["transfer"],
                ["adjust"], ["freeze"], ["unfreeze"], ["unlock"], ["transfer-card"], ["status"],
                ["gift", "offer"], ["gift", "claim"], ["gift", "recall"], ["card", "show"],
                ["request", "show"], ["merchant", "register"], ["store", "register"],
                ["program", "define"], ["program", "update"], ["program", "close"],
                ["clock", "set"], ["history"], ["wallet"], ["liability"], ["store-day"],
                ["store-redemptions"], ["settlement"], ["analytics"],
                ["projections", "status"], ["projections", "rebuild"]):
        out, _ = env.run(*cmd, "--help")
        check(out.startswith("Usage: cardledger " + " ".join(cmd)), "%s --help" % cmd)
        check("Exit codes" in out, "%s --help lists the exit codes" % cmd)


def usage_errors_exit_1_and_send_nothing(env):
    env.run(want=1)
    env.run("teleport", want=1)
    env.run("gift", want=1)
    env.run("gift", "wrap", want=1)
    env.run("redeem", want=1)
    env.run("redeem", "X", "--store", "s1", "--amount", "12.505", want=1)
    env.run("redeem", "X", "--store", "s1", "--bogus", want=1)
    env.run("program", "define", "p", "--merchant", "m", "--kind", "diamond", "--currency",
            "CNY", want=1)
    env.run("program", "define", "p", "--merchant", "m", "--kind", "voucher-percent",
            "--currency", "CNY", "--percent-off", "150%", want=1)
    _, err = env.run("--request-id", "x" * 65, "status", want=1)
    check("request-id" in err, "an over-long request id is named")


def daemon_flags_are_checked(env):
    # A bad daemon setting is refused with exit 64 before anything is opened or made.
    data = os.path.join(env.tmp, "never-made")
    for flags, said in ((["--prefault", "maybe"], "--prefault is on or off"),
                        (["--checkpoint-events", "0"], "--checkpoint-events must be between"),
                        (["--journal-ahead-mb", "65537"], "--journal-ahead-mb must be between"),
                        (["--journal-ahead-mb", "-1"], "--journal-ahead-mb wants a whole number")):
        p = subprocess.run([DAEMON, "--data", data, "--listen", "ipc://" + data + ".sock",
                            "--publish", "ipc://" + data + ".pub"] + flags,
                           capture_output=True, text=True, timeout=30)
        check(p.returncode == 64, "%s: exit 64, got %d" % (flags, p.returncode))
        check(said in p.stderr, "%s: stderr says %r (got %r)" % (flags, said, p.stderr))
        check(not os.path.exists(data), "%s: no data directory made" % flags)


def journal_file_is_kept_ahead(env):
    # By default the daemon keeps 64 MiB of zeros past the journal's content; with
    # --journal-ahead-mb 0 the file is only what LMDB wrote (docs/daemon.md section 3).
    path = os.path.join(env.tmp, "data", "journal", "data.mdb")
    deadline = time.monotonic() + 10
    while os.path.getsize(path) < 64 << 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    check(os.path.getsize(path) >= 64 << 20,
          "the journal file reaches 64 MiB ahead (%d bytes)" % os.path.getsize(path))
    data = os.path.join(env.tmp, "no-ahead")
    sock = "ipc://" + data + ".sock"
    proc = subprocess.Popen([DAEMON, "--data", data, "--listen", sock, "--publish",
                             "ipc://" + data + ".pub", "--journal-ahead-mb", "0",
                             "--log-level", "warn"])
    try:
        deadline = time.monotonic() + 10
        ready = False
        while not ready and time.monotonic() < deadline and proc.poll() is None:
            ready = subprocess.run([CLI, "--connect", sock, "--timeout-ms", "200", "--retries",
                                    "0", "status"], capture_output=True).returncode == 0
        check(ready, "a daemon with --journal-ahead-mb 0 answers")
        time.sleep(0.2)
        size = os.path.getsize(os.path.join(data, "journal", "data.mdb"))
        check(size < 1 << 20, "no zeros ahead with --journal-ahead-mb 0 (%d bytes)" % size)
    finally:
        check(Env.s_stop(proc) == 0, "the daemon with --journal-ahead-mb 0 stops cleanly")


def unreachable_ledger_exits_2(env):
    p = subprocess.run([CLI, "--connect", "ipc://" + os.path.join(env.tmp, "nobody.sock"),
                        "--timeout-ms", "100", "--retries", "1", "status"],
                       capture_output=True, text=True)
    check(p.returncode == 2, "exit 2, got %d" % p.returncode)
    check("could not reach the ledger" in p.stderr, "stderr says so")


def status_answers(env):
    o = env.json("status")
    check(o["status"] == "ok" and o["result"] == "status", "status is ok")
    check(o["now_us"] == CLOCK_START_US, "the test clock")
    out, _ = env.run("status", env_connect=True)  # $CARDLEDGER_CONNECT works too
    check("head sequence" in out, "human status")


def merchants_stores_and_programs_are_set_up(env):
    out, _ = env.run("merchant", "register", "m1", "--name", "Bakery One")
    check("registered merchant m1" in out, out)
    o = env.json("store", "register", "s1", "--merchant", "m1", "--region", "310000",
                 "--name", "Main St")
    check(o["status"] == "ok", "store s1")
    env.run("store", "register", "s2", "--merchant", "m1", "--region", "320000")
    _, err = env.run("store", "register", "s1", "--merchant", "m1", "--region", "310000",
                     want=3)
    check("already_exists" in err, "a second s1 is refused with its status name on stderr")

    out, _ = env.run("program", "define", "gift", "--merchant", "m1", "--kind", "stored-value",
                     "--currency", "cny", "--custom-min", "1", "--custom-max", "1000",
                     "--valid-days", "365", "--transferable", "--transfers-max", "5",
                     "--reloadable", "--balance-max", "2000", "--remind-days", "30",
                     "--gift-ttl-hours", "48", "--theme", "spring", "--name", "Spring gift")
    check("defined program gift of merchant m1 (stored-value, CNY)" in out, out)
    env.run("program", "update", "gift", "--merchant", "m1", "--kind", "stored-value",
            "--currency", "CNY", "--custom-min", "1", "--custom-max", "1000", "--valid-days",
            "365", "--transferable", "--reloadable", "--balance-max", "2000",
            "--name", "Spring gift 2026")
    env.run("program", "define", "pinned", "--merchant", "m1", "--kind", "stored-value",
            "--currency", "CNY", "--denominations", "100,200", "--pin-required",
            "--valid-days", "365")
    env.run("program", "define", "punch10", "--merchant", "m1", "--kind", "punch",
            "--currency", "CNY", "--uses", "10", "--valid-days", "90", "--stores", "s1")
    env.run("program", "define", "v20off100", "--merchant", "m1", "--kind",
            "voucher-threshold", "--currency", "CNY", "--threshold", "100", "--amount-off", "20",
            "--valid-from", "2025-12-01", "--valid-until", "2027-01-01", "--regions", "310000")
    env.run("program", "define", "vpct", "--merchant", "m1", "--kind", "voucher-percent",
            "--currency", "CNY", "--percent-off", "15%", "--cap", "50", "--uses", "2",
            "--valid-days", "30")
    env.run("program", "define", "vcash", "--merchant", "m1", "--kind", "voucher-cash",
            "--currency", "CNY", "--amount-off", "10", "--valid-days", "30", "--stock", "100",
            "--per-holder", "2")
    env.run("--minor", "program", "define", "vex", "--merchant", "m1", "--kind",
            "voucher-exchange", "--currency", "CNY", "--skus", "LATTE,MOCHA", "--valid-days",
            "30", "--amount-off", "0")


def a_stored_value_card_lives_its_life(env):
    o = env.json("issue", "--merchant", "m1", "--program", "gift", "--face-value", "200",
                 "--holder", "alice", "--price-paid", "180")
    check(o["status"] == "ok" and o["result"] == "issued", "issued")
    code = o["code"]
    check(code and o["card"]["balance_minor"] == 20000, "face value 200.00")
    env.state["code"] = code

    out, _ = env.run("redeem", code, "--store", "s1", "--amount", "12.50", "--order-ref", "o-1")
    check(re.search(r"redeemed 12\.50 CNY from \S*%s; balance 187\.50 CNY" % code[-4:], out),
          "redeem sentence: " + out)

    o = env.json("--minor", "redeem", code, "--store", "s1", "--amount", "750")
    check(o["amount_minor"] == 750 and o["card"]["balance_minor"] == 18000, "redeem in minor")
    seq = o["redemption_seq"]

    out, _ = env.run("reverse", code, "--redemption", str(seq), "--amount", "5",
                     "--store", "s1", "--reason", "refund")
    check("reversed 5.00 CNY" in out and "balance 185.00 CNY" in out, "reverse: " + out)

    out, _ = env.run("reload", code, "--amount", "50")
    check("reloaded 50.00 CNY" in out and "balance 235.00 CNY" in out, "reload: " + out)

    o = env.json("issue", "--merchant", "m1", "--program", "gift", "--face-value", "100",
                 "--holder", "alice")
    code2 = o["code"]
    o = env.json("transfer", code, code2, "--amount", "10")
    check(o["result"] == "transfer", "transfer result")
    check(o["from_card"]["balance_minor"] == 22500 and o["to_card"]["balance_minor"] == 11000,
          "both cards moved in one step")

    out, _ = env.run("adjust", code, "--amount", "-1.00", "--reason", "till difference")
    check("balance 224.00 CNY" in out, "adjust: " + out)

    env.run("freeze", code, "--reason", "lost")
    _, err = env.run("redeem", code, "--store", "s1", "--amount", "1", want=3)
    check("card_frozen" in err, "a frozen card refuses: " + err)
    env.run("unfreeze", code)

    out, _ = env.run("card", "show", code)
    check("balance     224.00 CNY" in out and "alice" in out, "card show: " + out)
    o = env.json("card", "show", "id:%d" % env.json("card", "show", code)["card"]["card_id"])
    check(o["card"]["balance_minor"] == 22400, "card show by id:N")

    # A redeem with a chosen request id, then the request is on record.
    env.run("--request-id", "cli-redeem-1", "redeem", code, "--store", "s1", "--amount", "4")
    out, _ = env.run("--request-id", "cli-redeem-1", "redeem", code, "--store", "s1",
                     "--amount", "4")
    check("replayed" in out and "balance 220.00 CNY" in out, "a repeat is replayed: " + out)
    o = env.json("request", "show", "cli-redeem-1")
    check(o["found"] is True and o["stored_reply"]["status"] == "ok", "request show")
    check(o["stored_reply"]["amount_minor"] == 400, "the stored reply's result")
    out, _ = env.run("request", "show", "cli-redeem-1")
    check("found" in out and "redeemed 4.00 CNY" in out, "request show (human): " + out)
    o = env.json("request", "show", "never-sent")
    check(o["found"] is False, "an unknown request is not found")


def gifts_move_the_card_between_holders(env):
    code = env.state["code"]
    o = env.json("gift", "offer", code, "--from", "alice")
    check(o["result"] == "gift" and o["claim_secret"], "offer has a secret")
    env.json("gift", "claim", code, "--offer", str(o["offer_id"]), "--secret",
             o["claim_secret"], "--holder", "bob")
    check(env.json("card", "show", code)["card"]["holder"] == "bob", "bob holds it")

    o = env.json("gift", "offer", code, "--from", "bob", "--to", "carol")
    out, _ = env.run("gift", "recall", code, "--offer", str(o["offer_id"]), "--holder", "bob")
    check("recalled gift offer" in out, out)

    out, _ = env.run("transfer-card", code, "--from", "bob", "--to", "dave")
    check("transferred card" in out and "dave" in out, out)


def wrong_pins_lock_and_unlock_reopens(env):
    o = env.json("issue", "--merchant", "m1", "--program", "pinned", "--face-value", "100")
    code, pin = o["code"], o["pin"]
    check(pin != "", "a PIN is shown once at issue")
    wrong = "000000" if pin != "000000" else "111111"
    for _ in range(5):
        env.run("redeem", code, "--store", "s1", "--amount", "1", "--pin", wrong, want=3)
    check(env.json("card", "show", code)["card"]["locked"] is True, "five wrong PINs lock")
    _, err = env.run("redeem", code, "--store", "s1", "--amount", "1", "--pin", pin, want=3)
    check("card_locked" in err, "a locked card refuses even the right PIN: " + err)
    env.run("unlock", code, "--reason", "holder called")
    out, _ = env.run("redeem", code, "--store", "s1", "--amount", "1", "--pin", pin)
    check("balance 99.00 CNY" in out, out)


def punch_cards_and_vouchers_redeem(env):
    code = env.json("issue", "--merchant", "m1", "--program", "punch10")["code"]
    out, _ = env.run("redeem", code, "--store", "s1", "--uses", "2")
    check("redeemed 2 uses" in out and "8 uses left" in out, out)
    _, err = env.run("redeem", code, "--store", "s2", want=3)
    check("store_not_accepting" in err, err)

    code = env.json("issue", "--merchant", "m1", "--program", "v20off100")["code"]
    _, err = env.run("redeem", code, "--store", "s1", "--order-amount", "80", want=3)
    check("threshold_not_met" in err, err)
    o = env.json("redeem", code, "--store", "s1", "--order-amount", "150")
    check(o["discount_minor"] == 2000 or o["amount_minor"] == 2000, "20.00 off")

    code = env.json("issue", "--merchant", "m1", "--program", "vpct")["code"]
    out, _ = env.run("redeem", code, "--store", "s1", "--order-amount", "100")
    check("15.00 CNY off" in out, out)

    code = env.json("issue", "--merchant", "m1", "--program", "vex")["code"]
    out, _ = env.run("redeem", code, "--store", "s1", "--sku", "LATTE")
    check("exchanged voucher" in out and "LATTE" in out, out)

    env.run("program", "close", "vcash", "--merchant", "m1", "--reason", "season over")
    _, err = env.run("issue", "--merchant", "m1", "--program", "vcash", want=3)
    check("program_closed" in err, err)


def the_test_clock_moves_forward_only(env):
    o = env.json("clock", "set", "+1d")
    check(o["status"] == "ok", "clock +1d")
    check(env.json("status")["now_us"] == CLOCK_START_US + 86400 * 10 ** 6, "a day later")
    out, _ = env.run("clock", "set", "2026-01-03T00:00:00Z")
    check("clock set to 2026-01-03T00:00:00Z" in out, out)
    env.run("clock", "set", "2026-01-01", want=3)


BATCH_CSV = ("\ufeffrow_key,holder,face_value,channel,note\r\n"
             "emp-001,\"Zhang, San\",200.00,,\"likes \"\"tea\"\"\"\r\n"
             "emp-002,li-si,100,enterprise,\r\n"
             "\r\n"
             "emp-003,\"wang\nwu\",150.5,,multi-line holder\r\n"
             " emp-004 ,zhao,,,uses --face-value\r\n")


def s_read_out(path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    check(rows[0] == ["row_key", "card_id", "code", "pin", "status"], "the output header")
    return {r[0]: r for r in rows[1:]}


def issue_batch_is_idempotent(env):
    src = os.path.join(env.tmp, "staff.csv")
    with open(src, "w", encoding="utf-8", newline="") as f:
        f.write(BATCH_CSV)
    cards_before = env.json("status")["cards"]
    out1 = os.path.join(env.tmp, "issued.csv")
    _, err = env.run("issue-batch", src, "--merchant", "m1", "--program", "gift",
                     "--out", out1, "--batch-size", "3", "--face-value", "50")
    check("4 issued, 0 already issued, 0 refused" in err, "summary: " + err)
    check("ignoring column 'note'" in err, "unknown columns are named")
    check("batch 2/2" in err, "plain progress lines when stderr is not a terminal")
    rows = s_read_out(out1)
    check(sorted(rows) == ["emp-001", "emp-002", "emp-003", "emp-004"], "every row, trimmed")
    for key, r in rows.items():
        check(r[4] == "issued" and r[1] and r[2], "%s issued with id and code" % key)
    check(env.json("status")["cards"] == cards_before + 4, "four cards issued")
    for key, face in (("emp-001", 20000), ("emp-003", 15050), ("emp-004", 5000)):
        o = env.json("card", "show", "id:" + rows[key][1])
        check(o["card"]["balance_minor"] == face, "%s holds %d" % (key, face))
    holder = env.json("card", "show", "id:" + rows["emp-003"][1])["card"]["holder"]
    check(holder == "wang\nwu", "a quoted line break stays in the value")

    # The output file is never overwritten by accident: it holds the only copy of the PINs.
    _, err = env.run("issue-batch", src, "--merchant", "m1", "--program", "gift",
                     "--out", out1, want=1)
    check("--force" in err, "refuses to overwrite: " + err)

    # Run the same file again: nothing is issued twice, no PIN is shown again.
    out2 = os.path.join(env.tmp, "again.csv")
    _, err = env.run("issue-batch", src, "--merchant", "m1", "--program", "gift",
                     "--out", out2, "--batch-size", "3", "--face-value", "50")
    check("0 issued, 4 already issued" in err, "summary: " + err)
    rows2 = s_read_out(out2)
    for key, r in rows2.items():
        check(r[4] == "already_issued" and r[3] == "", "%s already issued, no PIN" % key)
        check(r[1] == rows[key][1] and r[2] == rows[key][2], "%s: the same card" % key)
    # Another batch size gives other request ids; the ledger still knows the row keys.
    out3 = os.path.join(env.tmp, "again2.csv")
    env.run("issue-batch", src, "--merchant", "m1", "--program", "gift", "--out", out3,
            "--face-value", "50")
    check(all(r[4] == "already_issued" for r in s_read_out(out3).values()), "by row key")
    check(env.json("status")["cards"] == cards_before + 4, "still four cards")

    # --json: one object per batch, with the rows.
    objs = env.json("issue-batch", src, "--merchant", "m1", "--program", "gift",
                    "--face-value", "50")
    check(isinstance(objs, dict) and objs["result"] == "batch" and len(objs["rows"]) == 4,
          "one JSON object for the one batch")


def issue_batch_names_bad_rows_and_sends_nothing(env):
    bad = os.path.join(env.tmp, "bad.csv")
    with open(bad, "w", encoding="utf-8", newline="") as f:
        f.write("row_key,holder,face_value\n"
                "b-1,x,100\n"
                ",y,100\n"
                "b-3,z,12.345\n"
                "b-1,w,100\n"
                "b-5,\"unterminated,100\n")
    cards_before = env.json("status")["cards"]
    _, err = env.run("issue-batch", bad, "--merchant", "m1", "--program", "gift", want=1)
    check("line 6" in err and "never closed" in err, "the broken quote is found first: " + err)

    with open(bad, "w", encoding="utf-8", newline="") as f:
        f.write("row_key,holder,face_value\n"
                "b-1,x,100\n"
                ",y,100\n"
                "b-3,z,12.345\n"
                "b-1,w,100\n"
                "b-5,v\n")
    _, err = env.run("issue-batch", bad, "--merchant", "m1", "--program", "gift", want=1)
    check("line 3: row_key is missing" in err, err)
    check("line 4: face_value '12.345'" in err, err)
    check("line 5: duplicate row_key 'b-1' (first on line 2)" in err, err)
    check("line 6: 2 fields" in err, err)
    check("nothing was sent" in err, err)
    check(env.json("status")["cards"] == cards_before, "no card issued")

    with open(bad, "wb") as f:
        f.write(b"row_key\nok\n\xe9t\xe9\n")
    _, err = env.run("issue-batch", bad, "--merchant", "m1", "--program", "gift", want=1)
    check("line 3" in err and "UTF-8" in err, err)
    with open(bad, "w") as f:
        f.write("holder\nx\n")
    _, err = env.run("issue-batch", bad, "--merchant", "m1", "--program", "gift", want=1)
    check("no row_key column" in err, err)


def issue_batch_refusals_exit_3(env):
    src = os.path.join(env.tmp, "nope.csv")
    with open(src, "w") as f:
        f.write("row_key\nn-1\n")
    _, err = env.run("issue-batch", src, "--merchant", "m1", "--program", "nope",
                     "--out", os.path.join(env.tmp, "nope-out.csv"), want=3)
    check("unknown_program" in err, err)


def s_wait_projections(env, head):
    """Polls `projections status` until every projection's checkpoint reaches head (10 s)."""
    deadline = time.monotonic() + 10
    while True:
        o = env.json("projections", "status")
        infos = o["projections"]["projections"]
        if len(infos) == 3 and all(p["checkpoint_seq"] >= head for p in infos):
            return infos
        check(time.monotonic() < deadline,
              "the projections did not reach sequence %d in 10 s: %s" % (head, infos))
        time.sleep(0.05)


def the_projector_answers_every_query(env):
    # A small history of its own merchant: issue, redeem, reverse, reload, gift.
    env.run("merchant", "register", "mq")
    env.run("store", "register", "q1", "--merchant", "mq", "--region", "310000")
    env.run("store", "register", "q2", "--merchant", "mq", "--region", "320000")
    env.run("program", "define", "pq", "--merchant", "mq", "--kind", "stored-value",
            "--currency", "CNY", "--custom-min", "1", "--custom-max", "1000", "--valid-days",
            "365", "--transferable", "--reloadable")
    a = env.json("issue", "--merchant", "mq", "--program", "pq", "--face-value", "100",
                 "--holder", "ann", "--channel", "store", "--store", "q1")
    b = env.json("issue", "--merchant", "mq", "--program", "pq", "--face-value", "50",
                 "--holder", "ann", "--price-paid", "45")
    code_a, id_a = a["code"], a["card"]["card_id"]
    r = env.json("redeem", code_a, "--store", "q2", "--amount", "30", "--order-ref", "q-1")
    env.run("reverse", code_a, "--redemption", str(r["redemption_seq"]), "--amount", "10",
            "--store", "q2")
    env.run("reload", code_a, "--amount", "20")
    g = env.json("gift", "offer", code_a, "--from", "ann")
    env.json("gift", "claim", code_a, "--offer", str(g["offer_id"]), "--secret",
             g["claim_secret"], "--holder", "bob")
    status = env.json("status")
    head, now_us = status["head_seq"], status["now_us"]
    day = time.strftime("%Y-%m-%d", time.gmtime(now_us // 10 ** 6))

    infos = s_wait_projections(env, head)
    check(sorted(p["name"] for p in infos) == ["analytics", "balances", "stores"],
          "three projections: %s" % infos)
    check(all(p["journal_head_seq"] >= head and p["error"] == "" for p in infos),
          "healthy, with the daemon's head")
    out, _ = env.run("projections", "status")
    check("balances" in out and "caught up" in out, "projections status (human): " + out)

    balance_a = env.json("card", "show", code_a)["card"]["balance_minor"]
    balance_b = env.json("card", "show", b["code"])["card"]["balance_minor"]
    check(balance_a == 10000 and balance_b == 5000, "balances 100.00 and 50.00")

    o = env.json("history", code_a)
    check(o["status"] == "ok" and o["result"] == "history" and o["as_of_seq"] >= head,
          "history answers as of the head")
    h = o["history"]
    events = [e["entry"] and next(k for k in e["entry"] if k not in ("request_id", "actor"))
              for e in h["entries"]]
    check(events == ["card_issued", "card_redeemed", "redemption_reversed", "card_reloaded",
                     "gift_offered", "gift_claimed"], "the card's events: %s" % events)
    ids = [e["entry"]["request_id"] for e in h["entries"]]
    check(all(len(i) == 26 and set(i) <= set("abcdefghijklmnopqrstuvwxyz234567") for i in ids)
          and "request_id_b32" not in h["entries"][0]["entry"],
          "history shows each event's request id as the client's text: %s" % ids)
    check(h["events_total"] == 6 and h["holders"] == ["ann", "bob"], "holders: %s" % h)
    check(h["card"]["balance_minor"] == 10000 and h["card"]["kind"] == "stored-value",
          "the card's view")
    check(code_a not in json.dumps(o), "the full code is never shown")
    o = env.json("history", "id:%d" % id_a, "--limit", "2")
    check(len(o["history"]["entries"]) == 2 and o["history"]["entries"][-1]["seq"] <= head,
          "--limit keeps the most recent")
    out, _ = env.run("history", code_a)
    check("card_redeemed" in out and "30.00 CNY" in out, "history (human): " + out)
    check("ann -> bob" in out, "the chain of holders: " + out)

    o = env.json("wallet", "mq", "bob")
    check([c["card_id"] for c in o["wallet"]["cards"]] == [id_a], "bob holds card a")
    o = env.json("wallet", "mq", "ann")
    check([c["code_masked"] for c in o["wallet"]["cards"]] == [b["card"]["code_masked"]],
          "ann holds card b")
    out, _ = env.run("wallet", "mq", "bob")
    check("1 card" in out and "100.00 CNY" in out, "wallet (human): " + out)

    o = env.json("liability", "mq")
    rows = o["liability"]["rows"]
    prog = [x for x in rows if x["program_id"] == "pq"]
    total = [x for x in rows if x["program_id"] == "" and x["currency"] == "CNY"]
    check(len(prog) == 1 and prog[0]["outstanding_minor"] == balance_a + balance_b,
          "the liability is the sum of the balances: %s" % rows)
    check(prog[0]["live_cards"] == 2 and total and total[0]["outstanding_minor"] == 15000,
          "two live cards, and the CNY total")
    o = env.json("liability", "mq", "--program", "pq")
    check([x["program_id"] for x in o["liability"]["rows"]][:1] == ["pq"], "--program")
    out, _ = env.run("liability", "mq")
    check("150.00 CNY" in out, "liability (human): " + out)
    _, err = env.run("liability", "mq", "--program", "nope", want=3)
    check("unknown_program" in err, err)

    o = env.json("store-day", "mq", "q2", "--day", day)
    d = o["store_day"]
    check(d["redemptions"] == 1 and d["redeemed_minor"] == 3000, "the store day counts it: %s"
          % d)
    check(d["reversals"] == 1 and d["reversed_minor"] == 1000, "and the reversal")
    out, _ = env.run("store-day", "mq", "q2", "--day", day)
    check("redemptions  1, 30.00" in out and "reversals    1, 10.00" in out,
          "store-day (human): " + out)

    o = env.json("store-redemptions", "mq", "q2", "--from", day, "--limit", "10")
    lines = o["redemptions"]["lines"]
    check(len(lines) == 1 and lines[0]["seq"] == r["redemption_seq"] and
          lines[0]["amount_minor"] == 3000 and lines[0]["reversed_minor"] == 1000 and
          lines[0]["order_ref"] == "q-1" and o["redemptions"]["more"] is False,
          "the redemption line: %s" % lines)
    o = env.json("store-redemptions", "mq", "q2", "--after", str(r["redemption_seq"]))
    check(o["redemptions"]["lines"] == [], "the next page is empty")
    out, _ = env.run("store-redemptions", "mq", "q2")
    check("q-1" in out and "30.00" in out, "store-redemptions (human): " + out)
    env.run("store-redemptions", "mq", "q2", "--limit", "1001", want=1)

    o = env.json("settlement", "mq", "--from", day)
    cells = o["settlement"]["cells"]
    check(len(cells) == 1 and cells[0]["sold_store_id"] == "q1" and
          cells[0]["redeemed_store_id"] == "q2" and cells[0]["value_minor"] == 2000,
          "sold at q1, redeemed at q2, net of the reversal: %s" % cells)
    out, _ = env.run("settlement", "mq")
    check("q1" in out and "20.00" in out, "settlement (human): " + out)

    o = env.json("analytics", "mq", "--group-by", "program")
    rows = o["analytics"]["rows"]
    check(len(rows) == 1 and rows[0]["key"] == "pq" and rows[0]["issued_count"] == 2 and
          rows[0]["issued_face_minor"] == 15000 and rows[0]["currency"] == "CNY",
          "analytics by program: %s" % rows)
    check(rows[0]["redeemed_net_minor"] == 2000 and rows[0]["reloaded_minor"] == 2000,
          "redeemed net and reloaded")
    check(isinstance(rows[0]["value_redemption_rate_ppm"], int) and
          len(rows[0]["lag_buckets"]) == 5, "rates are integer ppm; every field is there")
    ppm = rows[0]["gift_rate_ppm"]
    out, _ = env.run("analytics", "mq", "--group-by", "program", "--from", day)
    check("%d.%04d%%" % (ppm // 10000, ppm % 10000) in out and "150.00 CNY" in out,
          "analytics (human) shows ppm as exact percentages: " + out)
    env.json("analytics", "mq", "--program", "pq", "--group-by", "day")
    env.run("analytics", "mq", "--group-by", "weekday", want=1)

    o = env.json("projections", "rebuild", "stores")
    check(o["status"] == "ok", "rebuild starts")
    _, err = env.run("projections", "rebuild", "nope", want=3)
    check("invalid_argument" in err, err)
    s_wait_projections(env, head)

    p = subprocess.run([CLI, "--projector", "ipc://" + os.path.join(env.tmp, "nobody.sock"),
                        "--timeout-ms", "100", "--retries", "1", "projections", "status"],
                       capture_output=True, text=True)
    check(p.returncode == 2 and "could not reach the projector" in p.stderr,
          "an unreachable projector exits 2: %d %s" % (p.returncode, p.stderr))
    env2 = dict(os.environ, CARDLEDGER_PROJECTOR=env.projector)
    p = subprocess.run([CLI, "--json", "liability", "mq"], capture_output=True, text=True,
                       env=env2)
    check(p.returncode == 0 and json.loads(p.stdout)["status"] == "ok",
          "$CARDLEDGER_PROJECTOR works too")


CASES = [
    help_and_version_work_on_every_level,
    usage_errors_exit_1_and_send_nothing,
    daemon_flags_are_checked,
    journal_file_is_kept_ahead,
    unreachable_ledger_exits_2,
    status_answers,
    merchants_stores_and_programs_are_set_up,
    a_stored_value_card_lives_its_life,
    gifts_move_the_card_between_holders,
    wrong_pins_lock_and_unlock_reopens,
    punch_cards_and_vouchers_redeem,
    the_test_clock_moves_forward_only,
    issue_batch_is_idempotent,
    issue_batch_names_bad_rows_and_sends_nothing,
    issue_batch_refusals_exit_3,
    the_projector_answers_every_query,
]


def main():
    passed = failed = 0
    tmp = tempfile.mkdtemp(prefix="cl-cli-")
    env = None
    try:
        env = Env(tmp)
        env.wait_ready()
        for case in CASES:
            print("--- " + case.__name__, flush=True)
            try:
                case(env)
                passed += 1
                print("ok   " + case.__name__, flush=True)
            except CaseFailed as e:
                failed += 1
                print("FAIL %s: %s" % (case.__name__, e), flush=True)
            except Exception:
                failed += 1
                traceback.print_exc()
                print("FAIL " + case.__name__, flush=True)
        proj_code, code = env.stop()
        env = None
        for name, c in (("projector_stops_cleanly", proj_code),
                        ("daemon_stops_cleanly", code)):
            if c == 0:
                passed += 1
                print("ok   " + name)
            else:
                failed += 1
                print("FAIL %s: exit status %s" % (name, c))
    except Exception:
        traceback.print_exc()
        failed += 1
    finally:
        if env is not None:
            env.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed), flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
