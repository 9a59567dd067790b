"""Added to py-consul's suite by pyconsul.sh (as tests/test_zz_harness.py): not py-consul's.

The Docker fixture's config must start the agent as it is. When pyconsul.sh has to leave a key
out for the rest of the suite (--compat-drop-key), this test still uses the full config, so
the refusal stays visible as a failure instead of being hidden by the workaround.
"""


def test_fixture_config_accepted(fixture_config_agent) -> None:
    assert fixture_config_agent.version
