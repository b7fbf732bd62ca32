"""Rules of the API that JSON Schema cannot state, taught to schemathesis.

The document says them in words (descriptions); the server enforces them with a 400.
Without these hooks schemathesis would count those 400s as "valid data rejected".
Loaded through SCHEMATHESIS_HOOKS by tests/fuzz/schemathesis.sh.
"""
import schemathesis

APP_BODIES = {"create_app", "update_app"}


def _operation_id(context):
    op = getattr(context, "operation", None)
    definition = getattr(op, "definition", None)
    raw = getattr(definition, "raw", None) or {}
    return raw.get("operationId")


@schemathesis.hook
def map_body(context, body):
    op = _operation_id(context)
    if op not in APP_BODIES or not isinstance(body, dict):
        return body
    env = body.get("env")
    if not isinstance(env, list):
        return body
    # "Keys must be distinct": keep the first of each key.
    seen, distinct = set(), []
    for item in env:
        key = item.get("key") if isinstance(item, dict) else None
        if isinstance(key, str):
            if key in seen:
                continue
            seen.add(key)
        distinct.append(item)
    body["env"] = distinct
    # On update a variable sent without a value keeps its stored one, so a key the app
    # does not have yet needs a value. The fuzzer cannot know which keys exist: it
    # always sends one.
    if op == "update_app":
        for item in distinct:
            if isinstance(item, dict) and item.get("value") is None:
                item["value"] = "x"
    return body
