import pytest

from tests.agentproc import AgentProcess


@pytest.fixture(scope="module")
def agent():
    proc = AgentProcess().start()
    yield proc
    proc.stop()
