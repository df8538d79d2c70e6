"""The networks and what runs them. Nets (transformer_net, fast_net) describe their own frame geometry (geometry);
the engine base (base: Engine, EngineOptions, NoisePlanes, errors) sits below the backends (body_engine: torch and
torch-compile; onnx_backend; tensorrt_backend); the registry (registry) names the backends, loads engines and builds
artifacts. Checkpoints (checkpoint) are the one container for a trained net."""
