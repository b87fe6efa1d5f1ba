"""What a fleet client keeps of an answer whose caller went away (`broker.fleet.kept`)."""

from __future__ import annotations

from cellfleet.broker.contract.responses import Pending, Result, Terminated, Yielded
from cellfleet.broker.fleet.kept import KeptAnswers, Next, Step, with_front


def item(text: str) -> dict[str, str]:
    return {"type": "input_text", "text": text}


def test_nothing_kept_sends_the_request_as_it_is() -> None:
    kept: KeptAnswers[str] = KeptAnswers()
    assert kept.take("1", "w", pending=False) == Next(Step.SEND)


def test_requests_about_a_cell_wait_until_its_dropped_requests_are_settled() -> None:
    kept: KeptAnswers[str] = KeptAnswers()
    assert kept.dropped("1", "r1")
    assert kept.dropped("1", "r2")
    assert kept.take("1", "w", pending=False) == Next(Step.HOLD)
    assert kept.take("2", "x", pending=False) == Next(Step.SEND)  # (another cell's go on)
    assert kept.settled("1", "r1", None) == []
    assert kept.settled("1", "r2", None) == ["w"]
    assert kept.take("1", "w", pending=False) == Next(Step.SEND)


def test_a_held_request_whose_caller_went_away_is_forgotten() -> None:
    kept: KeptAnswers[str] = KeptAnswers()
    kept.dropped("1", "r")
    kept.take("1", "w", pending=False)
    assert not kept.dropped("1", "w")
    assert kept.settled("1", "r", None) == []


def test_a_kept_completion_answers_the_next_request_and_only_it() -> None:
    kept: KeptAnswers[str] = KeptAnswers()
    kept.dropped("1", "r")
    completion = Result(cell_id="1", content_items=[item("b")])
    kept.settled("1", "r", completion)
    assert kept.take("1", "t", pending=False) == Next(Step.ANSWER, answer=completion)
    assert kept.take("1", "w", pending=False) == Next(Step.SEND)


def test_a_kept_output_goes_in_front_of_the_next_answer() -> None:
    kept: KeptAnswers[str] = KeptAnswers()
    kept.dropped("1", "r")
    kept.settled("1", "r", Yielded(cell_id="1", content_items=[item("a")]))
    step = kept.take("1", "w", pending=True)
    assert step == Next(Step.SEND, before=[item("a")])
    later = Result(cell_id="1", content_items=[item("b")])
    assert with_front(later, step.before) == Result(
        cell_id="1", content_items=[item("a"), item("b")]
    )


def test_a_kept_frontier_answers_a_pending_observer_and_fronts_any_other() -> None:
    frontier = Pending(cell_id="1", content_items=[item("a")], pending_tool_call_ids=["tool-1"])
    for pending, expected in (
        (True, Next(Step.ANSWER, answer=frontier)),
        (False, Next(Step.SEND, before=[item("a")])),  # (spec §4.7: its ids are forgotten)
    ):
        kept: KeptAnswers[str] = KeptAnswers()
        kept.dropped("1", "r")
        kept.settled("1", "r", frontier)
        assert kept.take("1", "w", pending=pending) == expected


def test_an_answer_that_ended_the_cell_for_another_caller_is_not_kept() -> None:
    for answer in (
        Terminated(cell_id="1", content_items=[item("a")]),
        Result(cell_id="1", error_text="exec cell 1 not found", missing=True),
    ):
        kept: KeptAnswers[str] = KeptAnswers()
        kept.dropped("1", "r")
        kept.settled("1", "r", answer)
        assert kept.take("1", "w", pending=False) == Next(Step.SEND)


def test_the_output_a_dropped_request_carried_is_kept_again_when_no_answer_came() -> None:
    kept: KeptAnswers[str] = KeptAnswers()
    kept.dropped("1", "r")
    kept.settled("1", "r", None, before=[item("a")])
    assert kept.take("1", "w", pending=False) == Next(Step.SEND, before=[item("a")])


def test_outputs_kept_one_after_another_stay_in_order() -> None:
    kept: KeptAnswers[str] = KeptAnswers()
    kept.dropped("1", "r1")
    kept.dropped("1", "r2")
    kept.settled("1", "r1", Yielded(cell_id="1", content_items=[item("a")]))
    kept.settled("1", "r2", Result(cell_id="1", content_items=[item("b")]))
    step = kept.take("1", "w", pending=False)
    assert step.answer == Result(cell_id="1", content_items=[item("a"), item("b")])


def test_a_closed_callback_waits_for_the_kept_completion_alone() -> None:
    kept: KeptAnswers[str] = KeptAnswers()
    assert not kept.closing("2")  # (nothing kept: closed at once)
    kept.dropped("1", "r")
    kept.settled("1", "r", Result(cell_id="1"))
    assert kept.closing("1")
    assert kept.take("1", "w", pending=False).closed


def test_the_session_s_end_returns_what_still_waited() -> None:
    kept: KeptAnswers[str] = KeptAnswers()
    kept.dropped("1", "r")
    kept.take("1", "w", pending=False)
    kept.dropped("2", "r2")
    kept.settled("2", "r2", Result(cell_id="2"))
    kept.closing("2")
    assert kept.close() == (["w"], ["2"])
    assert kept.take("2", "x", pending=False) == Next(Step.SEND)


def test_a_released_request_whose_caller_left_before_it_went_is_forgotten() -> None:
    kept: KeptAnswers[str] = KeptAnswers()
    kept.dropped("1", "r")
    kept.take("1", "w", pending=False)
    assert kept.settled("1", "r", None) == ["w"]
    assert not kept.dropped("1", "w")  # (nothing to wait for: it never went)
    assert kept.take("1", "w", pending=False, released=True) == Next(Step.FORGET)
    assert kept.take("1", "x", pending=False) == Next(Step.SEND)


def test_a_released_request_goes_once() -> None:
    kept: KeptAnswers[str] = KeptAnswers()
    kept.dropped("1", "r")
    kept.take("1", "w", pending=False)
    kept.settled("1", "r", None)
    assert kept.take("1", "w", pending=False, released=True) == Next(Step.SEND)
    assert kept.dropped("1", "w")  # (sent: its drop is awaited like any other)
