"""An autouse fixture for tests on the real reactor: they must leave nothing of theirs behind.

Import it into a test module (`from tests.reactor_hygiene import clean_reactor`) to apply it.
"""

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater


@pytest.fixture(autouse=True)
def clean_reactor():
    """Every test leaves the reactor as it found it: no timers, sockets or pipes of ours."""
    def selectables():  # the reactor's own wakers come and go with it; they are not ours
        return {s for s in reactor.getReaders() + reactor.getWriters()
                if not type(s).__module__.startswith("twisted.internet._signals")}

    calls_before, open_before = set(reactor.getDelayedCalls()), selectables()
    yield
    pytest_twisted.blockon(deferLater(reactor, 0, lambda: None))  # let closes complete
    assert set(reactor.getDelayedCalls()) - calls_before == set()
    assert selectables() - open_before == set()
