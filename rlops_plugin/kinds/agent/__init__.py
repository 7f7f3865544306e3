"""The agent policy kind (LLM agents): so far the local tiny-model builder its tests and demos use."""
