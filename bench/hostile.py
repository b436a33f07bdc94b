"""Hostile input: schemathesis-generated requests from `/openapi.json` against `recsys serve`.

    python bench/hostile.py --make-models /tmp/soak      # or --store DIR
        [--examples 100] [--seed 0] [--out hostile.json]

`recsys serve` (gunicorn, 2 workers, API keys on) serves real tiny exports of the three tasks.
For every operation in the OpenAPI document, schemathesis (on hypothesis) generates
`--examples` requests that follow the schema (positive) and `--examples` that break it
(negative: wrong types, missing fields, out-of-range values, odd strings in paths), sends them
with a valid API key and checks each response:

- not_a_server_error: no 5xx;
- status_code_conformance, content_type_conformance, response_headers_conformance,
  response_schema_conformance: the status is documented, and the body matches its schema;
- negative_data_rejection: a request that breaks the schema is refused with a 4xx;
- ignored_auth: the operation refuses a request without a valid key (401).

Not run: positive_data_acceptance, which expects a 2xx for every request that follows the
schema; a well-formed request can still name a model or product that does not exist (404, 422).

It prints the number of cases per operation and every failure (JSON); exit code 0 when there
is none. `fuzz()` is also run by the test suite with fewer cases
(tests/reliability/test_hostile_fuzz.py).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import functools
import json
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import reliability as rel  # noqa: E402

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "ignored_auth",
)


def _checks():
    import schemathesis.specs.openapi.checks  # noqa: F401  (registers the OpenAPI checks)
    from schemathesis import checks as registry

    return registry.CHECKS.get_by_names(list(CHECKS))


def fuzz(base_url, api_key, examples=100, seed=0, modes=("positive", "negative"), timeout=60):
    """Runs `examples` cases per operation and mode; returns counts and failures.

    Args:
        base_url: str. The running service, e.g. http://127.0.0.1:8000.
        api_key: str or None. Sent as `Authorization: Bearer <key>`.
        examples: int. Cases per operation and generation mode.
        seed: int. Hypothesis seed, so a run can be repeated.
        modes: the generation modes ("positive", "negative").
    """
    import hypothesis
    import requests
    import schemathesis
    from schemathesis import GenerationMode
    from schemathesis.core.failures import FailureGroup

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    schema = schemathesis.openapi.from_url(base_url + "/openapi.json", headers=headers)
    schema.config.update(base_url=base_url)
    checks = _checks()
    session = requests.Session()
    cases = collections.Counter()
    statuses = collections.Counter()
    failures = []
    errors = []
    started = time.perf_counter()

    def record(label, mode, case):
        cases[(label, mode)] += 1
        try:
            response = case.call(session=session, headers=headers, timeout=timeout)
        except requests.RequestException as e:
            failures.append(_failure(label, mode, case, None, f"no response: {e!r}"))
            return
        statuses[str(response.status_code)] += 1
        try:
            case.validate_response(response, checks=checks, headers=headers)
        except (AssertionError, FailureGroup) as e:
            failures.append(_failure(label, mode, case, response, str(e)))

    settings = hypothesis.settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in modes:
            strategy = operation.as_strategy(generation_mode=GenerationMode(mode))
            try:
                _run(strategy, settings, seed, functools.partial(record, operation.label, mode))
            except hypothesis.errors.Unsatisfiable as e:  # e.g. no negative data for a GET
                errors.append({"operation": operation.label, "mode": mode, "error": str(e)[:300]})
    session.close()
    per_operation = collections.defaultdict(dict)
    for (label, mode), count in sorted(cases.items()):
        per_operation[label][mode] = count
    return {
        "cases": sum(cases.values()),
        "operations": len(per_operation),
        "per_operation": dict(per_operation),
        "statuses": dict(sorted(statuses.items())),
        "failures": failures,
        "generation_errors": errors,
        "seconds": round(time.perf_counter() - started, 1),
        "checks": list(CHECKS),
    }


def _run(strategy, settings, seed, record):
    import hypothesis

    @hypothesis.seed(seed)
    @settings
    @hypothesis.given(case=strategy)
    def run_cases(case):
        record(case)

    run_cases()


def _failure(label, mode, case, response, message):
    return {
        "operation": label,
        "mode": mode,
        "request": {
            "method": case.method,
            "path": case.formatted_path,
            "body": _short(getattr(case, "body", None)),
        },
        "status": None if response is None else response.status_code,
        "response": None if response is None else response.text[:300],
        "message": message[:1000],
    }


def _short(value):
    text = json.dumps(value, default=repr)
    return text if len(text) < 400 else text[:400] + "..."


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    rel.add_store_arguments(parser)
    parser.add_argument("--examples", type=int, default=100, help="cases per operation and mode")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--log-dir")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    rel.resolve_store(args)
    work = pathlib.Path(args.log_dir or tempfile.mkdtemp(prefix="hostile-"))
    work.mkdir(parents=True, exist_ok=True)
    key = "hostile-bench-key-0123456789"
    server = rel.Server(
        args.store, work / "server.log", workers=args.workers, env={"RECSYS_API_KEYS": key}
    )
    server.start()
    try:
        result = fuzz(server.url, key, args.examples, args.seed)
        ready, _ = rel.request(server.port, "GET", "/readyz")
    finally:
        server.stop()
    log = (work / "server.log").read_text(errors="replace")
    result = {
        "date": datetime.date.today().isoformat(),
        "settings": {"examples": args.examples, "seed": args.seed, "workers": args.workers},
        "machine": rel.machine(),
        **result,
        "ready_at_end": ready == 200,
        "unhandled_errors_in_log": log.count("Unhandled error"),
        "key_in_log": key in log,
    }
    rel.emit(result, args.out)
    bad = result["failures"] or result["unhandled_errors_in_log"] or result["key_in_log"]
    return 1 if bad or not result["ready_at_end"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
