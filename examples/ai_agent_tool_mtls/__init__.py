"""An "AI agent" calling a "tool" over mTLS with SPIFFE identities; run: ``python -m examples.ai_agent_tool_mtls``."""
