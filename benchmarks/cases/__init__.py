"""The code that runs inside one fresh interpreter per (scheduler, case).

Everything here imports only the standard library at module level, so it runs in the
peers' private virtualenvs as well as in the project's: each adapter imports its own
scheduler lazily. Entry point: ``python -m benchmarks.cases SCHEDULER SCENARIO PARAMS``
prints one JSON line with the results.
"""
