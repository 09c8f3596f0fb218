"""Holds a stand-in for ``devtools_testutils``, put on ``sys.path`` by
``python -m envelope.testing.azure_sdk_tests`` only."""
