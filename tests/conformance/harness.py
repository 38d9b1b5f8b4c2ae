"""Check OUR server's `/invocations` against MLflow's in-process reference, one request at a time.

    check_route(base_url, entry, form)            -> RouteCheck, AssertionError on a mismatch
    check_entry(base_url, entry)                  -> list of mismatch descriptions ([] when all agree)

The rule (issue 12): for a body MLflow's pyfunc model answers with 200, our answer is a 200 with
the same JSON (exact floats, NaN as NaN, int distinct from float); for a body MLflow refuses, ours
is a 4xx with MLflow's error keys (`error_code`, `message`). Where MLflow is listed as wrong
(`KNOWN_MLFLOW_DIFFERENCES`), our answer must be what the trainer meant
(`reference.intended_answer`), or, with `known="skip"`, nothing is asserted and the caller gets
both answers and the sentence in the RouteCheck.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from tests.conformance.reference import (
    FORM_LIMITS,
    Answer,
    Body,
    build_body,
    intended_answer,
    is_known,
    json_diff,
    load_reference_model,
    pick,
    reference_answer,
    size,
)
from tests.conformance.zoo import Entry

TIMEOUT = httpx.Timeout(30.0, connect=5.0)


@dataclass(frozen=True)
class RouteCheck:
    """One request sent to our server, what it answered, and what MLflow answers in process."""

    entry: str
    form: str
    body: Body
    expected: Answer
    served: Answer
    known: str | None
    """The KNOWN_MLFLOW_DIFFERENCES sentence when MLflow is listed as wrong here."""
    intended: Answer | None
    """What the trainer meant, checked instead of `expected` where MLflow is listed as wrong."""
    non_finite_as_null: bool = False
    """Accept null where MLflow writes NaN or Infinity (a strict JSON writer cannot write those)."""

    def mismatch(self) -> str | None:
        """How our answer breaks the rule, or None (always None for a skipped known difference)."""
        expected = self.expected
        if self.known is not None:
            if self.intended is None:
                return None
            expected = self.intended
        where = f"{self.entry}/{self.form}" + (
            " (MLflow is wrong here: the trainer's intent)" if self.known else ""
        )
        if expected.status == 200:
            if self.served.status != 200:
                return f"{where}: we answer {self.served.status} ({_short(self.served.body)}), MLflow 200"
            diff = json_diff(self.served.body, expected.body, non_finite_as_null=self.non_finite_as_null)
            return f"{where}: {diff}" if diff else None
        if not 400 <= self.served.status < 500:
            return f"{where}: MLflow refuses it ({expected.status}), we answer {self.served.status}"
        body = self.served.body
        if not (isinstance(body, dict) and {"error_code", "message"} <= body.keys()):
            return f"{where}: our {self.served.status} lacks MLflow's error keys: {_short(body)}"
        return None


def _short(value: Any) -> str:
    return str(value)[:300]


def _post(client: httpx.Client, url: str, body: Body, headers: Mapping[str, str]) -> Answer:
    response = client.post(url, content=body.content, headers={"content-type": body.content_type, **headers})
    try:
        parsed = response.json()
    except ValueError:
        parsed = None
    return Answer(response.status_code, parsed)


def check_route(
    base_url: str,
    entry: Entry,
    form: str,
    *,
    rows: list[int] | None = None,
    params: dict[str, Any] | None = None,
    bad: bool = False,
    path: str = "/invocations",
    headers: Mapping[str, str] | None = None,
    client: httpx.Client | None = None,
    timeout: httpx.Timeout = TIMEOUT,
    non_finite_as_null: bool = False,
    known: Literal["intent", "skip"] = "intent",
) -> RouteCheck:
    """POST the entry's request in `form` to `base_url + path`; assert it answers as MLflow does.

    `rows` sends only those rows (or tensor rows); `params` replaces the entry's params (`{}`
    sends none); `bad` sends the entry's `bad_rows`. A single row sent alone is checked against
    the pseudo-form "rows alone" of KNOWN_MLFLOW_DIFFERENCES too. Where MLflow is listed as wrong,
    `known="intent"` checks the trainer's intent and `known="skip"` checks nothing. Raises
    AssertionError with the first difference; returns the RouteCheck when it passes.
    """
    sent = pick(entry, rows) if rows is not None else entry
    body = build_body(sent, form, params=params, bad=bad)
    expected = reference_answer(load_reference_model(entry), body)
    sentence = is_known(entry, form, rows)
    # The intent is known for the entry's own rows and params (not for bad rows or other params).
    intent_known = sentence is not None and known == "intent" and not bad and params is None
    intended = intended_answer(entry, form, rows) if intent_known else None
    url = f"{base_url.rstrip('/')}{path}"
    if client is None:
        with httpx.Client(timeout=timeout) as own:
            served = _post(own, url, body, headers or {})
    else:
        served = _post(client, url, body, headers or {})
    label = form if rows is None else f"{form} rows {rows}"
    label += " bad" if bad else ""
    check = RouteCheck(entry.name, label, body, expected, served, sentence, intended, non_finite_as_null)
    if problem := check.mismatch():
        raise AssertionError(problem)
    return check


def check_entry(
    base_url: str,
    entry: Entry,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: httpx.Timeout = TIMEOUT,
    non_finite_as_null: bool = False,
    known: Literal["intent", "skip"] = "intent",
) -> list[str]:
    """Every form of the entry's request, each row alone, its bad rows and its params variants;
    returns the mismatches (an empty list when our server answers as MLflow throughout)."""
    problems: list[str] = []
    with httpx.Client(timeout=timeout) as client:
        # A body format that cannot carry the entry's values (FORM_LIMITS) is no check of ours.
        forms = [form for form in entry.forms if (entry.name, form) not in FORM_LIMITS]
        requests: list[dict[str, Any]] = [{"form": form} for form in forms]
        requests += [{"form": form, "rows": [i]} for form in forms for i in range(size(entry))]
        if entry.bad_rows:
            requests += [{"form": form, "bad": True} for form in forms]
        if entry.params:
            requests += [{"form": entry.forms[0], "params": {}}]
        for request in requests:
            try:
                check_route(
                    base_url,
                    entry,
                    headers=headers,
                    client=client,
                    non_finite_as_null=non_finite_as_null,
                    known=known,
                    **request,
                )
            except AssertionError as exc:
                problems.append(str(exc))
    return problems


def v2_columns(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows as Open Inference Protocol inputs, one tensor per column, each with the datatype
    a client would pick for its JSON values (BOOL, INT64, FP64, else BYTES)."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    return [_v2_column(c, [r.get(c) for r in rows]) for c in columns]


def _v2_column(name: str, values: list[Any]) -> dict[str, Any]:
    present = [v for v in values if v is not None]
    if all(type(v) is bool for v in present):
        datatype = "BOOL"
    elif all(type(v) is int for v in present):
        datatype = "INT64"
    elif all(type(v) in (int, float) for v in present):
        datatype = "FP64"
    else:
        datatype = "BYTES"
    return {"name": name, "datatype": datatype, "shape": [len(values)], "data": values}
