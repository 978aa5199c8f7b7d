"""The target's measured cost: per-operator profiles, a kernel latency table and predictor, runtime memory.

Sits above the zoo (it reads Keras models and builds zoo nets by name) and below the stages, which
optimize against it (NetAdapt/AMC adaptation, architecture search).
"""
