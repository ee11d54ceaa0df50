"""stdcli: answer questions about videos with a Video-LLM, decoded losslessly faster with Sparse-to-Dense.

    from stdcli import load_model, answer_video, AskOptions
    lm = load_model("path/to/checkpoint")
    record = answer_video(lm, "samples/short_1.mp4", AskOptions(question="What happens?"))
"""

from stdcli.lazy import lazy_exports

__version__ = "0.1.0"

# Imported on first use: torch and transformers take seconds, and `stdcli --help` or `import stdcli.world` need
# neither.
__all__, __getattr__ = lazy_exports(__name__, {
    "inputs": ("AskOptions", "FrameOptions", "VideoQuestions"),
    "ask": ("answer_questions", "answer_video", "answer_videos"),
    "records": ("Record",),
    "model.loading": ("load_model",),
    "model.registry": ("list_models",),
    "video": ("sample_frames",),
    "engine.options": ("DecodeOptions", "EngineConfig"),
    "engine.session": ("Engine", "generate"),
    "engine.costs": ("CostMemory",),
    "engine.policy": ("GammaPolicy",),
})

__all__ += ["__version__"]
