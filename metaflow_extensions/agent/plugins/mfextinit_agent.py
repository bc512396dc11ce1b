# Metaflow extension point: metadata providers contributed by metaflow-agent.
# TYPE "agent" behaves exactly like "service" for writes (inherited) and adds
# bounded read queries used by metaflow_agent.
METADATA_PROVIDERS_DESC = [("agent", ".agent_metadata.provider.AgentMetadataProvider")]
