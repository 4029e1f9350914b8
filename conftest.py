"""labgate is a pytest plugin: the suites and the harness's own tests load it from fixtures/."""

pytest_plugins = ["fixtures.plugin"]
