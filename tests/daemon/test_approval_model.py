"""The approval state machine, driven by hypothesis against a model: interleaved callers, approvers, clocks, departures.

The code under test is the daemon's own ApprovalBook, on a clock the test
moves. Each step is one thing that happens in a daemon: a caller's request
arrives (covered by a standing approval or held), an approver approves
(once, or for a while), denies, or names an id that does not exist, a
request's time runs out, a caller leaves, time passes. The model says what
must hold after each: a request is decided at most once and ends in
exactly one outcome, heard once by the watchers; a program starts only for
an approval of that very request, or for a standing approval of that very
endpoint and caller that has not run out; nothing is decided after its end.

CI runs APPROVAL_MODEL_EXAMPLES examples (default 400) of up to 60 steps,
thousands of steps in a few seconds; docs/approval.md has a longer run.
"""

from __future__ import annotations

import os
import secrets

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, precondition, rule

from capsudo.daemon._approval import (APPROVED, DENIED, PENDING, TIMED_OUT, WITHDRAWN, ApprovalBook,
                                      DecisionError)

ENDPOINTS = ("build", "deploy")
CALLERS = (1000, 1001)
EXAMPLES = int(os.environ.get("APPROVAL_MODEL_EXAMPLES", "400"))
STEPS = int(os.environ.get("APPROVAL_MODEL_STEPS", "60"))
#: Steps taken over the whole run, for the documented figures.
TAKEN = {"steps": 0, "requests": 0, "decisions": 0}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ApprovalMachine(RuleBasedStateMachine):
    requests = Bundle("requests")

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.book = ApprovalBook(self.clock)
        self.heard: dict[str, list[str]] = {}
        self.book.listen(self._heard)
        #: The model: each request's (endpoint, uid, deadline) and state.
        self.model: dict[str, dict] = {}
        self.standing: list[tuple[str, int, float]] = []
        #: Programs started: (request id or None for a standing approval, endpoint, uid).
        self.started: list[tuple[str | None, str, int]] = []

    def _heard(self, record: dict) -> None:
        if record["event"] == "ended":
            self.heard.setdefault(record["id"], []).append(record["state"])

    def _step(self) -> None:
        TAKEN["steps"] += 1

    # ---- what happens ----------------------------------------------------------

    @rule(target=requests, endpoint=st.sampled_from(ENDPOINTS), uid=st.sampled_from(CALLERS),
          timeout=st.sampled_from([1.0, 5.0, 60.0]))
    def a_caller_asks(self, endpoint, uid, timeout):
        self._step()
        TAKEN["requests"] += 1
        covering = self.book.covering(endpoint, uid)
        expected = [entry for entry in self.standing
                    if entry[0] == endpoint and entry[1] == uid and entry[2] > self.clock.now]
        assert (covering is not None) == bool(expected)
        if covering is not None:
            assert (covering.endpoint, covering.uid) == (endpoint, uid) and covering.until > self.clock.now
            self.started.append((None, endpoint, uid))
            return None
        request = self.book.hold(secrets.token_hex(8), endpoint, uid, timeout, "root")
        assert request.id not in self.model
        self.model[request.id] = {"endpoint": endpoint, "uid": uid, "deadline": self.clock.now + timeout,
                                  "state": PENDING}
        return request.id

    @rule(request=requests, approve=st.booleans(), standing=st.none() | st.sampled_from([0.5, 3.0, 30.0]))
    def an_approver_decides(self, request, approve, standing):
        self._step()
        TAKEN["decisions"] += 1
        if request is None:
            return
        model = self.model[request]
        decidable = model["state"] == PENDING and self.clock.now < model["deadline"]
        try:
            decided = self.book.decide(request, approve, "root", standing_for=standing if approve else None)
        except DecisionError:
            assert not decidable
            if model["state"] == PENDING:  # its time ran out before anyone noticed: it ends now, timed out
                model["state"] = TIMED_OUT
            return
        assert decidable and decided.id == request
        model["state"] = APPROVED if approve else DENIED
        if approve:
            self.started.append((request, model["endpoint"], model["uid"]))
            if standing is not None:
                self.standing.append((model["endpoint"], model["uid"], self.clock.now + standing))

    @rule(guess=st.text(alphabet="0123456789abcdef", min_size=1, max_size=32))
    def an_approver_names_a_request_that_is_not_there(self, guess):
        self._step()
        if guess in self.model:
            return
        with pytest.raises(DecisionError):
            self.book.decide(guess, True, "root")

    @rule(seconds=st.sampled_from([0.1, 0.5, 1.0, 2.0, 10.0, 70.0]))
    def time_passes(self, seconds):
        self._step()
        self.clock.now += seconds

    @rule()
    def the_timeouts_fire(self):
        """What each held session does when its time is up."""
        self._step()
        for request_id, model in self.model.items():
            if model["state"] == PENDING and self.clock.now >= model["deadline"]:
                self.book.expire(self.book.pending[request_id])
                model["state"] = TIMED_OUT

    @rule(request=consumes(requests))
    def the_caller_leaves(self, request):
        self._step()
        if request is None:
            return
        model = self.model[request]
        held = self.book.pending.get(request)
        if held is not None:
            self.book.withdraw(held)
            model["state"] = WITHDRAWN
        with pytest.raises(DecisionError):
            self.book.decide(request, True, "root")

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def a_late_decision_changes_nothing(self, data):
        self._step()
        ended = [request for request, model in self.model.items() if model["state"] != PENDING]
        if not ended:
            return
        request = data.draw(st.sampled_from(ended))
        before = self.book.ended[request]
        with pytest.raises(DecisionError):
            self.book.decide(request, data.draw(st.booleans()), "root")
        assert self.book.ended[request] == before

    # ---- what must hold ----------------------------------------------------------

    @invariant()
    def the_book_agrees_with_the_model(self):
        assert set(self.book.pending) == {request for request, model in self.model.items()
                                          if model["state"] == PENDING}
        for request, model in self.model.items():
            if model["state"] != PENDING:
                assert self.book.ended[request] == model["state"]
                # Exactly one outcome, heard once by every watcher.
                assert self.heard[request] == [model["state"]]
            else:
                assert request not in self.heard

    @invariant()
    def a_program_starts_only_for_an_approval_of_that_request(self):
        approved = [request for request, model in self.model.items() if model["state"] == APPROVED]
        by_request = [request for request, _, _ in self.started if request is not None]
        assert sorted(by_request) == sorted(approved)
        for request, endpoint, uid in self.started:
            if request is not None:
                assert (self.model[request]["endpoint"], self.model[request]["uid"]) == (endpoint, uid)


ApprovalMachine.TestCase.settings = settings(max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
                                             suppress_health_check=[HealthCheck.too_slow])
test_approval_state_machine = ApprovalMachine.TestCase


def test_the_run_explored_thousands_of_steps():
    """Runs after the machine (file order): CI's run is not a token one."""
    if TAKEN["steps"] == 0:
        pytest.skip("the state machine did not run in this process")
    print(f"approval model: {TAKEN}")
    if EXAMPLES >= 100:
        assert TAKEN["steps"] >= 1000
