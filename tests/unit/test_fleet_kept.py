"""What a fleet client keeps of an answer whose caller went away (`broker.fleet.kept`)."""

from __future__ import annotations

from cellfleet.broker.contract.responses import Pending, Result, Terminated, Yielded
from cellfleet.broker.fleet.kept import Asks, KeptAnswers, Next, Settled, Step, with_front

SEND = Next(Step.SEND)
HOLD = Next(Step.HOLD)


def item(text: str) -> dict[str, str]:
    return {"type": "input_text", "text": text}


def alive(_request: str) -> bool:
    return True


def released(kept: KeptAnswers[str], cell: str = "1") -> list[tuple[str, Next]]:
    out = []
    while (taken := kept.release_next(cell, alive)) is not None:
        out.append(taken)
    return out


def test_nothing_kept_sends_the_request_as_it_is() -> None:
    kept: KeptAnswers[str] = KeptAnswers()
    assert kept.take("1", "w", Asks.YIELD) == SEND


def test_requests_about_a_cell_wait_in_order_until_its_dropped_requests_are_settled() -> None:
    kept: KeptAnswers[str] = KeptAnswers()
    assert kept.dropped("1", "r1")
    assert kept.dropped("1", "r2")
    assert kept.take("1", "w", Asks.YIELD) == HOLD
    assert kept.take("1", "y", Asks.NOTHING) == HOLD
    assert kept.take("1", "t", Asks.TERMINATE) == HOLD
    assert kept.take("2", "x", Asks.YIELD) == SEND  # (another cell's go on)
    assert kept.settled("1", "r1", None) == Settled(release=False, closed=False)
    assert kept.settled("1", "r2", None) == Settled(release=True, closed=False)
    assert kept.take("1", "late", Asks.YIELD) == HOLD  # (behind those going now)
    assert released(kept) == [("w", SEND), ("y", SEND), ("t", SEND), ("late", SEND)]
    assert kept.take("1", "z", Asks.YIELD) == SEND


def test_a_released_request_dropped_in_turn_holds_the_rest_again() -> None:
    kept: KeptAnswers[str] = KeptAnswers()
    kept.dropped("1", "r")
    kept.take("1", "w1", Asks.YIELD)
    kept.take("1", "w2", Asks.YIELD)
    assert kept.settled("1", "r", None).release
    assert kept.release_next("1", alive) == ("w1", SEND)
    assert kept.dropped("1", "w1")  # (sent: its drop is awaited like any other)
    assert kept.release_next("1", alive) is None
    assert kept.settled("1", "w1", None).release
    assert released(kept) == [("w2", SEND)]


def test_a_held_request_whose_caller_went_away_is_forgotten() -> None:
    kept: KeptAnswers[str] = KeptAnswers()
    kept.dropped("1", "r")
    kept.take("1", "w", Asks.YIELD)
    assert not kept.dropped("1", "w")
    assert not kept.settled("1", "r", None).release  # (nothing waits)


def test_a_held_request_answered_meanwhile_is_skipped() -> None:
    kept: KeptAnswers[str] = KeptAnswers()
    kept.dropped("1", "r")
    kept.take("1", "failed", Asks.YIELD)
    kept.take("1", "w", Asks.YIELD)
    kept.settled("1", "r", None)
    assert kept.release_next("1", lambda request: request != "failed") == ("w", SEND)


def test_a_kept_completion_answers_the_next_request_and_only_it() -> None:
    completion = Result(cell_id="1", content_items=[item("b")])
    for asks in (Asks.YIELD, Asks.PENDING, Asks.TERMINATE):
        kept: KeptAnswers[str] = KeptAnswers()
        kept.dropped("1", "r")
        kept.settled("1", "r", completion)
        assert kept.take("1", "y", Asks.NOTHING) == SEND  # (takes no answer)
        assert kept.take("1", "t", asks) == Next(Step.ANSWER, answer=completion)
        assert kept.take("1", "w", Asks.YIELD) == SEND


def test_a_kept_output_goes_in_front_of_the_next_answer() -> None:
    kept: KeptAnswers[str] = KeptAnswers()
    kept.dropped("1", "r")
    kept.settled("1", "r", Yielded(cell_id="1", content_items=[item("a")]))
    step = kept.take("1", "w", Asks.YIELD)
    assert step == Next(Step.SEND, before=[item("a")])
    later = Result(cell_id="1", content_items=[item("b")])
    assert with_front(later, step.before) == Result(
        cell_id="1", content_items=[item("a"), item("b")]
    )
    missing = Result(cell_id="1", error_text="exec cell 1 not found", missing=True)
    assert with_front(missing, step.before) is missing


def test_an_exec_s_first_yield_answers_the_next_wait_as_it_is() -> None:
    """Spec §4.9: the first yield before anyone observed is kept for the next wait."""
    first = Yielded(cell_id="1", content_items=[item("a")])
    for asks, expected in (
        (Asks.YIELD, Next(Step.ANSWER, answer=first)),
        (Asks.PENDING, Next(Step.SEND, before=[item("a")])),
        (Asks.TERMINATE, Next(Step.SEND, before=[item("a")])),
    ):
        kept: KeptAnswers[str] = KeptAnswers()
        kept.dropped("1", "exec")
        kept.settled("1", "exec", first, first=True)
        assert kept.take("1", "w", asks) == expected


def test_a_kept_frontier_answers_a_pending_observer_and_fronts_any_other() -> None:
    frontier = Pending(cell_id="1", content_items=[item("a")], pending_tool_call_ids=["tool-1"])
    for asks, expected in (
        (Asks.PENDING, Next(Step.ANSWER, answer=frontier)),
        (Asks.YIELD, Next(Step.SEND, before=[item("a")])),  # (spec §4.7: ids forgotten)
    ):
        kept: KeptAnswers[str] = KeptAnswers()
        kept.dropped("1", "r")
        kept.settled("1", "r", frontier)
        assert kept.take("1", "w", asks) == expected


def test_an_answer_that_ended_the_cell_for_another_caller_is_not_kept() -> None:
    for answer in (
        Terminated(cell_id="1", content_items=[item("a")]),
        Result(cell_id="1", error_text="exec cell 1 not found", missing=True),
    ):
        kept: KeptAnswers[str] = KeptAnswers()
        kept.dropped("1", "r")
        kept.settled("1", "r", answer)
        assert kept.take("1", "w", Asks.YIELD) == SEND


def test_output_that_went_nowhere_is_kept_in_front_of_what_came_since() -> None:
    kept: KeptAnswers[str] = KeptAnswers()
    kept.dropped("1", "r1")
    kept.dropped("1", "r2")
    kept.settled("1", "r2", Result(cell_id="1", content_items=[item("b")]))
    kept.settled("1", "r1", None, before=[item("a")])  # (no answer: its output stays)
    completion = Result(cell_id="1", content_items=[item("a"), item("b")])
    assert kept.take("1", "w", Asks.YIELD) == Next(Step.ANSWER, answer=completion)
    kept.put_back("1", [item("c")])  # (a request that carried it failed)
    kept.put_back("1", [item("b")])
    assert kept.take("1", "w", Asks.YIELD) == Next(Step.SEND, before=[item("b"), item("c")])


def test_outputs_kept_one_after_another_stay_in_order() -> None:
    kept: KeptAnswers[str] = KeptAnswers()
    kept.dropped("1", "r1")
    kept.dropped("1", "r2")
    kept.settled("1", "r1", Yielded(cell_id="1", content_items=[item("a")]), first=True)
    kept.settled("1", "r2", Result(cell_id="1", content_items=[item("b")]))
    step = kept.take("1", "w", Asks.YIELD)
    assert step.answer == Result(cell_id="1", content_items=[item("a"), item("b")])


def test_a_closed_callback_waits_for_the_kept_completion_alone() -> None:
    kept: KeptAnswers[str] = KeptAnswers()
    assert not kept.closing("2")  # (nothing kept: closed at once)
    kept.dropped("1", "r")
    kept.settled("1", "r", Result(cell_id="1"))
    assert kept.closing("1")
    assert kept.take("1", "w", Asks.TERMINATE).closed


def test_the_session_s_end_returns_what_still_waited() -> None:
    kept: KeptAnswers[str] = KeptAnswers()
    kept.dropped("1", "r")
    kept.take("1", "w", Asks.YIELD)
    kept.dropped("2", "r2")
    kept.settled("2", "r2", Result(cell_id="2"))
    kept.closing("2")
    kept.dropped("3", "r3")
    assert kept.close() == (["w"], ["r", "r3"], ["2"])
    assert kept.take("2", "x", Asks.YIELD) == SEND
    assert kept.take("1", "x", Asks.YIELD) == SEND


def test_a_kept_answer_whose_taker_left_meanwhile_is_kept_again_as_it_was() -> None:
    first = Yielded(cell_id="1", content_items=[item("a")])
    kept: KeptAnswers[str] = KeptAnswers()
    kept.dropped("1", "exec")
    kept.settled("1", "exec", first, first=True)
    assert kept.take("1", "w", Asks.YIELD).step is Step.ANSWER
    assert not kept.dropped("1", "w")  # (never sent: nothing to wait for)
    kept.answered("1", "w", taken=False, left=True)
    assert kept.take("1", "w2", Asks.YIELD) == Next(Step.ANSWER, answer=first)  # (still first)
    kept.answered("1", "w2", taken=True, left=False)
    assert kept.take("1", "w3", Asks.YIELD) == SEND


def test_a_completion_put_back_still_holds_its_cell_s_closed_callback() -> None:
    completion = Result(cell_id="1", content_items=[item("b")])
    kept: KeptAnswers[str] = KeptAnswers()
    kept.dropped("1", "r")
    kept.settled("1", "r", completion)
    kept.closing("1")
    assert kept.take("1", "t", Asks.TERMINATE).closed
    kept.answered("1", "t", taken=False, left=True)  # (its caller left before it was answered)
    assert not kept.dropped("1", "t")  # (told after: nothing to wait for either)
    assert kept.take("1", "w", Asks.YIELD) == Next(Step.ANSWER, answer=completion, closed=True)


def test_a_cell_s_held_queue_goes_with_its_last_request() -> None:
    kept: KeptAnswers[str] = KeptAnswers()
    kept.dropped("1", "r")
    kept.take("1", "w", Asks.YIELD)
    kept.dropped("1", "w")
    kept.settled("1", "r", None)
    assert kept._held == {}
    kept.wait_released(0)  # (nothing held: at once)


def test_a_closed_callback_waits_for_a_dropped_request_that_may_bring_the_completion() -> None:
    for answer, closed_now in (
        (Result(cell_id="1", content_items=[item("b")]), False),  # (kept: when claimed)
        (None, True),  # (its drop was confirmed: no completion is kept)
        (Terminated(cell_id="1"), True),
    ):
        kept: KeptAnswers[str] = KeptAnswers()
        kept.dropped("1", "r")
        assert kept.closing("1")
        assert kept.settled("1", "r", answer).closed is closed_now
        assert kept.take("1", "w", Asks.YIELD).closed is not closed_now


def test_a_kept_answer_whose_taker_failed_is_kept_again_and_forgotten() -> None:
    completion = Result(cell_id="1")
    kept: KeptAnswers[str] = KeptAnswers()
    kept.dropped("1", "r")
    kept.settled("1", "r", completion)
    kept.take("1", "w", Asks.YIELD)
    kept.answered("1", "w", taken=False, left=False)  # (failed, not cancelled)
    assert kept._local == set()
    assert kept.take("1", "w2", Asks.YIELD) == Next(Step.ANSWER, answer=completion)
