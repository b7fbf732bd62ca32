"""Rules of the API that JSON Schema cannot state, taught to schemathesis.

The document says them in words (descriptions); the server enforces them with a 400
whose message names the rule. Without these hooks schemathesis would count those 400s
as "schema-valid request rejected" (ST202). Loaded through SCHEMATHESIS_HOOKS by
tests/fuzz/schemathesis.sh. Nothing else is tolerated: any other finding fails the run.
"""
import os
import uuid

import schemathesis

CREATE, UPDATE, UPLOAD = "POST /api/apps", "PUT /api/apps/{id}", "POST /api/apps/{id}/upload"

# Per operation, the 400 messages of rules outside JSON Schema.
TOLERATED = {
    # "Keys must be distinct" (env).
    CREATE: ("appears twice",),
    # On update a variable sent without a value keeps its stored one, so a key the
    # app does not have yet needs a value: it depends on the stored app.
    UPDATE: ("appears twice", "needs a value"),
    # An upload is judged on the file's name and content (an .R script or a safe
    # archive of them); tests/api_upload.rs covers that. Any 400 of an upload.
    UPLOAD: ("",),
}


def _label(context):
    return getattr(getattr(context, "operation", None), "label", None)


@schemathesis.hook
def map_body(context, body):
    """Steer generated app bodies to the rules, so the fuzzing phase gets past them."""
    op = _label(context)
    if op not in (CREATE, UPDATE) or not isinstance(body, dict):
        return body
    env = body.get("env")
    if not isinstance(env, list):
        return body
    seen, distinct = set(), []
    for item in env:
        key = item.get("key") if isinstance(item, dict) else None
        if isinstance(key, str):
            if key in seen:
                continue
            seen.add(key)
        distinct.append(item)
    body["env"] = distinct
    if op == UPDATE:
        for item in distinct:
            if isinstance(item, dict) and "value" in item and item["value"] is None:
                item["value"] = "x"
    return body


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """Keep every failure except a 400 that names one of the rules above."""
    if getattr(failure, "code", None) != "ST202" or response.status_code != 400:
        return True
    needles = TOLERATED.get(case.operation.label, ())
    return not any(n in response.text for n in needles)


# The user whose token the run uses (set by tests/schemathesis.rs). The run learns its
# id (`GET /api/auth/me`) and could delete that user once it has created a second
# admin, or reset its password: either ends the token mid-run and leaves the rest of
# the run testing 401s. Such a call goes to an unknown id instead (a 404).
OWN_USER = os.environ.get("FUZZ_OWN_USER_ID")
USER_BY_ID = ("PUT /api/users/{id}", "DELETE /api/users/{id}")


@schemathesis.hook
def before_call(context, case, kwargs):
    params = case.path_parameters or {}
    if OWN_USER and case.operation.label in USER_BY_ID and str(params.get("id")) == OWN_USER:
        params["id"] = str(uuid.uuid4())
