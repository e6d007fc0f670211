"""The steps a change passes through between capture and the sinks."""
