"""Metadata backends: the abstract interface (`base`) and local Metaflow (`local`).

The metadata service's backend is the extended provider's query engine
(`metaflow_extensions.agent.plugins.agent_metadata`); `metaflow_agent._backend` picks one.
"""
