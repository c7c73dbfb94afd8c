"""The test suite. A package, so its helpers import as tests.support.*."""
