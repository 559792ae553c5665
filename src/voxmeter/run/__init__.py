"""Orchestration: running a spec over a data set (harness), in a child process (isolate),
into the store (bench), and summarising each repeat into a Result (summary)."""
