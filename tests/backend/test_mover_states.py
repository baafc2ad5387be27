"""The mover's session state machine (backend.mover.states): pure logic."""

from __future__ import annotations

import pytest

from backend.mover.states import TRANSITIONS, IllegalTransition, Session, SessionState, allowed

S = Session
DISMOUNT = (S.UNLOADING, S.UNMOUNTING, S.IDLE)


def walk(*states: Session) -> list[tuple[Session, Session]]:
    """Drive a SessionState through `states`; the moves it reported."""
    seen: list[tuple[Session, Session]] = []
    st = SessionState(lambda old, new: seen.append((old, new)))
    for s in states:
        st.to(s)
    return seen


@pytest.mark.parametrize(
    "flow",
    [
        # a write on a blank volume, verified, then the tape stays mounted
        (S.MOUNTING, S.POSITIONING, S.TRANSFERRING, S.VERIFYING, S.TRANSFERRING, S.MOUNTED),
        # a recall on the mounted volume, then an idle dismount
        (*(S.MOUNTING, S.TRANSFERRING, S.MOUNTED, S.TRANSFERRING, S.MOUNTED), *DISMOUNT),
        # a cleaner session at start, then a cleaning cycle
        (S.CLEANER, S.UNMOUNTING, S.IDLE, S.CLEANING, S.IDLE),
        # a label refused at mount
        (S.MOUNTING, S.UNLOADING, S.UNMOUNTING, S.IDLE),
        # a drive failing mid-transfer: the changer takes the tape out, the drive goes down
        (S.MOUNTING, S.TRANSFERRING, S.UNMOUNTING, S.DOWN),
        # a mount that found the volume gone: back to idle
        (S.MOUNTING, S.IDLE),
    ],
)
def test_the_flows_a_mover_runs_are_allowed(flow: tuple[Session, ...]) -> None:
    seen = walk(*flow)
    assert [new for _, new in seen] == list(flow)
    assert seen[0][0] == S.IDLE  # every session starts idle


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (S.IDLE, S.TRANSFERRING),  # no transfer without a mount
        (S.IDLE, S.UNLOADING),  # nothing to unload
        (S.CLEANING, S.MOUNTING),  # a cleaning cartridge is never mounted for data
        (S.UNLOADING, S.TRANSFERRING),
        (S.UNMOUNTING, S.MOUNTED),
        (S.CLEANER, S.TRANSFERRING),
        (S.DOWN, S.IDLE),  # down ends the session: a new mover starts
        (S.DOWN, S.MOUNTING),
    ],
)
def test_moves_outside_the_table_are_refused(old: Session, new: Session) -> None:
    assert not allowed(old, new)
    st = SessionState(lambda o, n: None)
    st.state = old
    with pytest.raises(IllegalTransition, match=f"from {old} to {new}"):
        st.to(new)
    assert st.state == old  # a refused move changes nothing


def test_every_state_may_end_in_down_and_all_but_down_in_idle() -> None:
    for s in Session:
        assert allowed(s, S.DOWN) == (s != S.DOWN)
        assert allowed(s, S.IDLE) == (s != S.DOWN)


def test_the_table_names_every_state_and_stays_inside_it() -> None:
    assert set(TRANSITIONS) == set(Session)
    for targets in TRANSITIONS.values():
        assert targets <= set(Session)


def test_the_catalog_value_of_a_state_is_its_name() -> None:
    # drives.session holds these strings; reelfs drives shows them
    assert str(S.TRANSFERRING) == "transferring" and S("mounted") is S.MOUNTED
