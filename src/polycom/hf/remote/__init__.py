"""The Hugging Face model files polycom copies verbatim into every model folder it saves.

``configuration_polycom.py``, ``modeling_polycom.py`` (polycom's own model type) and
``modeling_polycom_swap.py`` (Llama-family models with a polycom ``hidden_act``), with
``polycom_activations.py``, import only torch and transformers, so
``AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)`` works where
polycom is not installed; where it is, they use polycom's modules. transformers copies
them on ``save_pretrained`` (``register_for_auto_class``, in ``polycom.hf.modeling``).
"""
