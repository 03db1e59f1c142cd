#!/usr/bin/python3
"""Interop proof: any language can speak cardledger's protocol.

Nothing here uses the C client. Python classes are generated with Google's protoc from
proto/cardledger.proto into a temporary directory (never committed), the real cardledgerd is
started on ipc:// endpoints in that directory with a test clock, and a plain python3-zmq DEALER
defines a merchant, a store and a stored-value program, issues a card, redeems it, and checks the
statuses and the balance; a plain SUB socket reads a published redemption and its request id
(docs/protocol.md section 6: request_id or request_id_b32). The daemon is then stopped with
SIGTERM and must exit cleanly.

Run with Debian's /usr/bin/python3 (python3-zmq, python3-protobuf). Environment:
CARDLEDGER_BUILD_ROOT (where daemon/cardledgerd is), CARDLEDGER_SOURCE_ROOT (where proto/ is).
The last line of output is "N passed, N failed".
"""

import base64
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

import zmq

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_ROOT = os.environ.get("CARDLEDGER_SOURCE_ROOT") or os.path.dirname(HERE)
BUILD_ROOT = os.environ.get("CARDLEDGER_BUILD_ROOT") or os.path.join(SOURCE_ROOT, "build")
CLOCK_START_US = 1767225600000000  # 2026-01-01T00:00:00Z
TIMEOUT_MS = 10000

pb = None  # the generated module, imported once protoc has run


class CaseFailed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise CaseFailed(what)


def generate_classes(tmp):
    """Runs protoc on the contract; returns the imported cardledger_pb2 module."""
    protoc = shutil.which("protoc")
    if protoc is None:
        raise RuntimeError("protoc not found (Debian package protobuf-compiler)")
    out = os.path.join(tmp, "py")
    os.makedirs(out)
    subprocess.run(
        [protoc, "--proto_path=" + os.path.join(SOURCE_ROOT, "proto"), "--python_out=" + out,
         "cardledger.proto"],
        check=True)
    sys.path.insert(0, out)
    import cardledger_pb2  # noqa: E402 (generated just now)
    return cardledger_pb2


class Ledger:
    """The daemon as a child process, and a DEALER socket to its command endpoint."""

    def __init__(self, tmp):
        self.endpoint = "ipc://" + os.path.join(tmp, "cmd.sock")
        self.pub_endpoint = "ipc://" + os.path.join(tmp, "pub.sock")
        daemon = os.path.join(BUILD_ROOT, "daemon", "cardledgerd")
        self.proc = subprocess.Popen([
            daemon, "--data", os.path.join(tmp, "data"), "--listen", self.endpoint,
            "--publish", self.pub_endpoint,
            "--test-clock", str(CLOCK_START_US)])
        self.ctx = zmq.Context()
        self.sock = None
        self.seq = 0
        self._reconnect()

    def _reconnect(self):
        if self.sock is not None:
            self.sock.close(linger=0)
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(self.endpoint)

    def new_id(self):
        self.seq += 1
        return "py-%d-%d" % (os.getpid(), self.seq)

    def send_batch(self, requests, timeout_ms=TIMEOUT_MS):
        """Sends one RequestBatch frame; returns the ReplyBatch's replies (or None on timeout)."""
        batch = pb.RequestBatch()
        for r in requests:
            batch.requests.append(r)
        self.sock.send(batch.SerializeToString())
        if self.sock.poll(timeout_ms) == 0:
            self._reconnect()  # drop a late reply with the socket (lazy pirate)
            return None
        frames = self.sock.recv_multipart()
        reply = pb.ReplyBatch.FromString(frames[-1])
        return list(reply.replies)

    def call(self, request):
        replies = self.send_batch([request])
        check(replies is not None, "no reply from the daemon")
        check(len(replies) == 1, "one reply per request, got %d" % len(replies))
        check(replies[0].request_id == request.request_id, "the reply echoes the request id")
        return replies[0]

    def wait_ready(self):
        deadline = time.monotonic() + TIMEOUT_MS / 1000
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("cardledgerd exited with %d" % self.proc.returncode)
            req = pb.Request(request_id=self.new_id(), get_status=pb.GetStatus())
            replies = self.send_batch([req], timeout_ms=200)
            if replies and replies[0].status == pb.STATUS_OK:
                return
        raise RuntimeError("cardledgerd did not answer within %d ms" % TIMEOUT_MS)

    def stop(self):
        self.sock.close(linger=0)
        self.ctx.term()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return -1
        return self.proc.returncode


def request(ledger, **command):
    return pb.Request(request_id=ledger.new_id(), **command)


# ---- cases ------------------------------------------------------------------------------------

STATE = {}


def status_answers_with_a_version(ledger):
    r = ledger.call(request(ledger, get_status=pb.GetStatus()))
    check(r.status == pb.STATUS_OK, "GetStatus is answered")
    check(r.WhichOneof("result") == "daemon_status", "the result is a daemon status")
    check(r.daemon_status.version != "", "the daemon says its version")
    check(r.daemon_status.now_us == CLOCK_START_US, "the test clock starts where it was set")


def merchant_store_and_program_are_defined(ledger):
    r = ledger.call(request(ledger, register_merchant=pb.RegisterMerchant(
        merchant_id="py-bakery", name="Python Bakery")))
    check(r.status == pb.STATUS_OK, "merchant registered: %s" % r.message)
    r = ledger.call(request(ledger, register_store=pb.RegisterStore(
        merchant_id="py-bakery", store_id="py-store-1", name="Main St", region="310000")))
    check(r.status == pb.STATUS_OK, "store registered: %s" % r.message)
    spec = pb.ProgramSpec(
        merchant_id="py-bakery", program_id="py-gift", name="Python gift card",
        kind=pb.CARD_KIND_STORED_VALUE, currency="CNY", denominations_minor=[10000, 20000],
        valid_days=365, accept_scope=pb.ACCEPT_SCOPE_ALL_STORES)
    r = ledger.call(request(ledger, define_program=pb.DefineProgram(spec=spec)))
    check(r.status == pb.STATUS_OK, "program defined: %s" % r.message)
    # The same program again is refused with a stable status, not a crash.
    r = ledger.call(request(ledger, define_program=pb.DefineProgram(spec=spec)))
    check(r.status == pb.STATUS_ALREADY_EXISTS, "a second definition is already_exists")


def a_card_is_issued_and_redeemed(ledger):
    r = ledger.call(request(ledger, issue_card=pb.IssueCard(
        merchant_id="py-bakery", program_id="py-gift", holder="py-holder-1",
        channel=pb.CHANNEL_ONLINE, face_value_minor=20000)))
    check(r.status == pb.STATUS_OK, "card issued: %s" % r.message)
    check(r.WhichOneof("result") == "issued", "the result is an issued card")
    code = r.issued.code
    check(code != "", "the full code is shown at issue")
    check(r.issued.card.balance_minor == 20000, "the card holds its face value")
    check(r.issued.card.code_masked.endswith(code[-4:]), "the masked code ends like the code")
    STATE["code"] = code

    redeem = request(ledger, redeem=pb.Redeem(
        card=pb.CardRef(code=code), store_id="py-store-1", order_ref="py-order-1",
        amount_minor=1250))
    r = ledger.call(redeem)
    check(r.status == pb.STATUS_OK, "redeemed: %s" % r.message)
    check(r.redeemed.amount_minor == 1250, "the amount taken")
    check(r.redeemed.card.balance_minor == 18750, "the balance after")
    check(r.last_seq > 0, "the reply names its journal sequence")
    STATE["redeem"] = redeem

    r = ledger.call(request(ledger, get_card=pb.GetCard(card=pb.CardRef(code=code))))
    check(r.status == pb.STATUS_OK, "the card is found")
    check(r.card.balance_minor == 18750, "GetCard shows the balance after the redemption")
    check(r.card.holder == "py-holder-1", "GetCard shows the holder")


def the_same_request_again_is_replayed_not_applied(ledger):
    r = ledger.call(STATE["redeem"])
    check(r.status == pb.STATUS_OK, "the retry is answered")
    check(r.replayed, "the retry gets the stored reply")
    r = ledger.call(request(ledger, get_card=pb.GetCard(card=pb.CardRef(code=STATE["code"]))))
    check(r.card.balance_minor == 18750, "the balance moved once")
    # The same id with other content is refused.
    changed = pb.Request()
    changed.CopyFrom(STATE["redeem"])
    changed.redeem.amount_minor = 1
    r = ledger.call(changed)
    check(r.status == pb.STATUS_REQUEST_ID_REUSED, "same id, other content: request_id_reused")


def one_message_carries_several_requests(ledger):
    code = STATE["code"]
    reqs = [
        request(ledger, redeem=pb.Redeem(card=pb.CardRef(code=code), store_id="py-store-1",
                                         amount_minor=750)),
        request(ledger, redeem=pb.Redeem(card=pb.CardRef(code=code), store_id="py-store-1",
                                         amount_minor=10 ** 9)),
        request(ledger, get_card=pb.GetCard(card=pb.CardRef(code=code))),
    ]
    replies = ledger.send_batch(reqs)
    check(replies is not None and len(replies) == 3, "three replies for three requests")
    check([r.request_id for r in replies] == [q.request_id for q in reqs], "replies in order")
    check(replies[0].status == pb.STATUS_OK, "the first redeem is applied")
    check(replies[1].status == pb.STATUS_INSUFFICIENT_BALANCE,
          "the overspend is refused: %s" % pb.Status.Name(replies[1].status))
    check(replies[1].message != "", "a refusal has a sentence")
    check(replies[2].card.balance_minor == 18000, "the refusal changed nothing")


# base32 as the ledger writes request ids: RFC 4648's characters, digit values in ASCII order
# (docs/protocol.md section 6).
B32_ORDERED = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", "234567abcdefghijklmnopqrstuvwxyz")


def b32_text(raw):
    return base64.b32encode(raw).decode().rstrip("=").translate(B32_ORDERED)


def b32_id():
    """A request id as libcardledger writes 16 bytes (here random ones)."""
    return b32_text(os.urandom(16))


def entry_request_id(entry):
    """A JournalEntry's request id, from whichever of its two fields holds it."""
    if entry.request_id:
        return entry.request_id
    return b32_text(entry.request_id_b32)


def a_subscriber_reads_the_request_id_of_a_published_redemption(ledger):
    sub = ledger.ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"py-bakery/CardRedeemed")
    sub.connect(ledger.pub_endpoint)
    try:
        # A subscription takes a moment to reach the daemon: redeem until the event of one of
        # these redemptions arrives (an earlier case's may still be on its way: skipped).
        sent = {}
        deadline = time.monotonic() + TIMEOUT_MS / 1000
        frames = None
        seq = 0
        while frames is None and time.monotonic() < deadline:
            rid = b32_id()
            r = ledger.call(pb.Request(request_id=rid, redeem=pb.Redeem(
                card=pb.CardRef(code=STATE["code"]), store_id="py-store-1", amount_minor=1)))
            check(r.status == pb.STATUS_OK, "redeemed: %s" % r.message)
            sent[r.last_seq] = rid
            while frames is None and sub.poll(100) != 0:
                got = sub.recv_multipart()
                check(len(got) == 2 and got[0] == b"py-bakery/CardRedeemed", "topic and entry")
                seq = int.from_bytes(got[1][0:8], "little")
                if seq in sent:
                    frames = got
        check(frames is not None, "a redemption was published")
        entry = pb.JournalEntry.FromString(frames[1][40:])
        check(entry.WhichOneof("event") == "card_redeemed", "the entry is a CardRedeemed")
        check(entry_request_id(entry) == sent[seq],
              "the request id of entry %d is the one sent: %r, %r" % (
                  seq, entry_request_id(entry), sent[seq]))
        check(entry.request_id == "" and len(entry.request_id_b32) == 16,
              "a base32 id is stored as its 16 bytes")
        # The redemption's region is its store's (StoreRegistered.region), not repeated here.
        check(entry.card_redeemed.store_id == "py-store-1" and entry.card_redeemed.region == "",
              "the redemption names its store and leaves the store's region out")
    finally:
        sub.close(linger=0)


def a_malformed_message_gets_a_refusal(ledger):
    ledger.sock.send(b"\xff\xff\xff not protobuf")
    check(ledger.sock.poll(TIMEOUT_MS) != 0, "the daemon answers garbage")
    reply = pb.ReplyBatch.FromString(ledger.sock.recv_multipart()[-1])
    check(len(reply.replies) >= 1, "at least one reply")
    check(reply.replies[0].status == pb.STATUS_MALFORMED, "the status is malformed")


CASES = [
    status_answers_with_a_version,
    merchant_store_and_program_are_defined,
    a_card_is_issued_and_redeemed,
    the_same_request_again_is_replayed_not_applied,
    one_message_carries_several_requests,
    a_subscriber_reads_the_request_id_of_a_published_redemption,
    a_malformed_message_gets_a_refusal,
]


def main():
    global pb
    passed = failed = 0
    tmp = tempfile.mkdtemp(prefix="cl-interop-")
    ledger = None
    try:
        pb = generate_classes(tmp)
        ledger = Ledger(tmp)
        ledger.wait_ready()
        for case in CASES:
            print("--- " + case.__name__, flush=True)
            try:
                case(ledger)
                passed += 1
                print("ok   " + case.__name__, flush=True)
            except CaseFailed as e:
                failed += 1
                print("FAIL %s: %s" % (case.__name__, e), flush=True)
            except Exception:
                failed += 1
                traceback.print_exc()
                print("FAIL " + case.__name__, flush=True)
        code = ledger.stop()
        ledger = None
        if code == 0:
            passed += 1
            print("ok   daemon_stops_cleanly_on_sigterm")
        else:
            failed += 1
            print("FAIL daemon_stops_cleanly_on_sigterm: exit status %s" % code)
    except Exception:
        traceback.print_exc()
        failed += 1
    finally:
        if ledger is not None:
            ledger.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed), flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
