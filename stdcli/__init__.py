"""stdcli: answer questions about videos with a Video-LLM, decoded losslessly faster with Sparse-to-Dense."""

__version__ = "0.1.0"
