"""Failure notices: what a failed task's exception becomes in the notice, never its text."""

from __future__ import annotations

from carrierfeeds.notify import failure_payload, failure_summary


def test_an_exception_not_ours_is_named_by_its_stage_and_type_only() -> None:
    """A task running several stages tags what escapes it with the stage it was in; its text (which may
    hold anything) never reaches the notice."""
    hung = TimeoutError("while sending 123-45-6789")
    hung.carrierfeeds_stage = "deliver"  # type: ignore[attr-defined]
    assert failure_summary(hung) == ("deliver", "timeout", "TimeoutError: the task ran past its execution timeout")
    broken = KeyError("Quillonius")
    broken.carrierfeeds_stage = "build"  # type: ignore[attr-defined]
    assert failure_summary(broken) == ("build", "internal", "KeyError")
    # Untagged (a single-stage task): the notice falls back to the task id.
    payload = failure_payload({"exception": KeyError("Quillonius"), "ti": _Ti()}, feed_id="f1")
    assert (payload["stage"], payload["task_id"], payload["message"]) == ("run", "run", "KeyError")
    assert "Quillonius" not in str(payload) and "123-45-6789" not in str(failure_summary(hung))


class _Ti:
    dag_id = "feed__f1"
    task_id = "run"
    try_number = 1
