"""The issue-10 agent questions at size: a scripted agent over the MCP tools, against the Client API.

`questions` holds the questions (how the agent asks, what the Client API answers); the tests ask
them on small real runs, `python -m benchmarks.agent_questions` on a flow of 1,000 runs and a
1,000-task foreach (`world`), on local Metaflow and the metadata service double.
"""
