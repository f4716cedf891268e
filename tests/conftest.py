pytest_plugins = ["onward.testing.pytest_plugin"]
