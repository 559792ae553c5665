"""Orchestration: opening a spec's model (model), running a spec over a data set (harness), in
a child process (isolate), into the store (bench), and summarising each repeat (summary)."""
