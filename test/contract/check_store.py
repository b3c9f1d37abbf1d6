"""Checks, after a schemathesis run, that the server stored nothing that was refused.

usage: check_store.py RECORD RECEIVE_URL ADMIN_URL ADMIN_TOKEN [--exact]

RECORD is the JSON-lines file written by hooks.py. Every topic (admin
/sorakaq/topic/list, with the API token) and every message of every topic
(receive /sorakaq/msg/list, paged) is read back:
  - each stored message id must be the msgId of a submit answered 200 (or of
    an item of a submitBatch answered 200);
  - each stored topic must come from a topic/add answered 200 or from a
    submit answered 200 (auto-creation);
  - each topic's counts must add up to the messages listed for it;
  - with --exact, each submit answered 200 must also be stored, unless a
    delete answered 200 for its id or a deleteAll answered 200 with done > 0
    for its topic (a message submitted through a link in stateful testing may
    also be deleted; the long form runs without --exact).
Prints the findings and exits 1 if there is any.
"""

import json
import sys
import urllib.parse
import urllib.request


def get(url, token=None):
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=30) as r:
        env = json.load(r)
    if env.get("ec") != 200:
        raise RuntimeError(f"GET {url}: {env}")
    return env["result"]


def main(argv):
    exact = "--exact" in argv
    argv = [a for a in argv if a != "--exact"]
    record, rurl, aurl, token = argv[1:5]

    accepted_ids, accepted_topics, calls = {}, set(), 0
    deleted, dead_deleted_topics = set(), set()
    with open(record, encoding="utf-8") as f:
        for line in f:
            ev = json.loads(line)
            calls += 1
            if ev.get("msgId"):
                accepted_ids[ev["msgId"]] = ev.get("topic")
            for item in ev.get("batch") or []:  # a submitBatch answered 200
                accepted_ids[item["msgId"]] = item.get("topic")
                if item.get("topic"):
                    accepted_topics.add(item["topic"])
            if ev.get("topic"):
                accepted_topics.add(ev["topic"])
            if ev.get("deleted"):
                deleted.add(ev["deleted"])
            if ev.get("deletedDeadOf") and ev.get("done"):
                dead_deleted_topics.add(ev["deletedDeadOf"])

    topics = get(aurl + "/sorakaq/topic/list", token)
    stored = {}  # id -> message
    for t in topics:
        cursor = ""
        while True:
            q = {"topic_name": t["topic_name"], "limit": "500"}
            if cursor:
                q["cursor"] = cursor
            page = get(rurl + "/sorakaq/msg/list?" + urllib.parse.urlencode(q))
            for m in page["messages"]:
                stored[m["msg_id"]] = m
            cursor = page["next_cursor"]
            if not cursor:
                break

    # A submit answered 200 made (or found) its topic, whatever spelling of
    # the field name the request used: count the stored message's topic too.
    for mid, m in stored.items():
        if mid in accepted_ids:
            accepted_topics.add(m["topic_name"])

    problems = []
    for mid, m in sorted(stored.items()):
        if mid not in accepted_ids:
            problems.append(f"stored message {mid} (topic {m['topic_name']!r}, state {m['state']}) "
                            f"matches no submit answered 200: {json.dumps(m)[:400]}")
    for t in topics:
        n = sum(1 for m in stored.values() if m["topic_name"] == t["topic_name"])
        if sum(t["counts"].values()) != n:
            problems.append(f"topic {t['topic_name']!r}: counts {t['counts']} add up to "
                            f"{sum(t['counts'].values())} but msg/list shows {n} messages")
        if t["topic_name"] not in accepted_topics:
            problems.append(f"stored topic {t['topic_name']!r} comes from no topic/add or submit answered 200: {json.dumps(t)[:300]}")
    if exact:
        for mid, topic in sorted(accepted_ids.items()):
            if mid not in stored and mid not in deleted and topic not in dead_deleted_topics:
                problems.append(f"submit answered 200 with msgId {mid} (topic {topic!r}) but the message is not stored")

    print(f"store check: {calls} answers recorded, {len(accepted_ids)} submits answered 200, "
          f"{len(stored)} messages stored in {len(topics)} topics"
          + (" (exact)" if exact else ""))
    for p in problems:
        print("  FINDING: " + p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
