"""The Bytewax flows that wire capture, operators and sinks together."""
