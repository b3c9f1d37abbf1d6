"""Schemathesis hooks for scripts/contract.sh (loaded through SCHEMATHESIS_HOOKS).

after_call appends one JSON line per answer to $SORAKAQ_CONTRACT_RECORD:
  {"op": "POST /sorakaq/msg/submit", "status": 200, "msgId": "...", "topic": "..."}
msgId is set for a submit answered 200, topic for a submit or a topic/add
answered 200, batch ([{"msgId", "topic"}, ...]: the items stored or replayed)
for a submitBatch answered 200, deleted (the msg_id) for a delete answered 200 and
deletedDeadOf/done for a deleteAll answered 200 (schemathesis reuses ids it saw
in earlier answers, so these can succeed). contract.sh then checks that every message and topic the server
stores comes from such an answer ("no request refused but stored").

With SORAKAQ_CONTRACT_PIN_DELAY=1 (used only when the server cannot be run in
a network namespace of its own), before_call raises the delay_time of every
well-formed submit to at least 6 hours, so no fuzzed callback URL is ever
called during the run: the server and its data are gone long before.
"""

import json
import os

import schemathesis

RECORD = os.environ.get("SORAKAQ_CONTRACT_RECORD", "")
PIN_DELAY = os.environ.get("SORAKAQ_CONTRACT_PIN_DELAY") == "1"
SIX_HOURS_MS = 6 * 3600 * 1000
MAX_DELAY_MS = 7 * 24 * 3600 * 1000


def _op(case):
    return f"{case.operation.method.upper()} {case.operation.path}"


def _json(data):
    if isinstance(data, (bytes, bytearray)):
        data = data.decode("utf-8", "replace")
    if not isinstance(data, str):
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def _pin(body):
    if isinstance(body, dict):
        d = body.get("delay_time")
        if isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_DELAY_MS:
            body["delay_time"] = max(d, SIX_HOURS_MS)


@schemathesis.hook
def before_call(context, case, kwargs):
    if not PIN_DELAY:
        return
    if _op(case) in ("POST /sorakaq/msg/submit", "POST /sorakaq/topic/testMessage"):
        _pin(case.body)
    elif _op(case) == "POST /sorakaq/msg/submitBatch" and isinstance(case.body, dict):
        items = case.body.get("messages")
        if isinstance(items, list):
            for it in items:
                _pin(it)


def _field(body, name):
    """The value of field name as Go's decoder reads it (case-insensitive, last wins)."""
    return _field_of(_json(body), name)


def _field_of(req, name):
    out = None
    if isinstance(req, dict):
        for k, v in req.items():
            if k.lower() == name and isinstance(v, str):
                out = v
    return out


def _field_of_any(req, name):
    """Like _field_of, for a value of any type."""
    out = None
    if isinstance(req, dict):
        for k, v in req.items():
            if k.lower() == name:
                out = v
    return out


@schemathesis.hook
def after_call(context, case, response):
    if not RECORD:
        return
    op = _op(case)
    line = {"op": op, "status": response.status_code}
    if response.status_code == 200:
        env = _json(response.content)
        result = env.get("result") if isinstance(env, dict) else None
        if op in ("POST /sorakaq/msg/submit", "POST /sorakaq/topic/testMessage"):
            line["msgId"] = result.get("msgId") if isinstance(result, dict) else None
            line["topic"] = _field(response.request.body, "topic_name")
        elif op == "POST /sorakaq/msg/submitBatch":
            req = _json(response.request.body)
            items = _field_of_any(req, "messages")
            results = result.get("results") if isinstance(result, dict) else None
            line["batch"] = []
            for i, r in enumerate(results if isinstance(results, list) else []):
                if isinstance(r, dict) and r.get("msgId"):
                    it = items[i] if isinstance(items, list) and i < len(items) else None
                    line["batch"].append({"msgId": r["msgId"], "topic": _field_of(it, "topic_name")})
        elif op == "POST /sorakaq/topic/add":
            line["topic"] = result.get("topic_name") if isinstance(result, dict) else None
        elif op in ("POST /sorakaq/msg/delete", "POST /sorakaq/admin/msg/delete"):
            # schemathesis reuses ids from earlier answers, so a delete can succeed
            line["deleted"] = _field(response.request.body, "msg_id")
        elif op == "POST /sorakaq/admin/msg/deleteAll":
            line["deletedDeadOf"] = _field(response.request.body, "topic_name")
            line["done"] = result.get("done") if isinstance(result, dict) else None
    with open(RECORD, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")
