"""Training and evaluation of FIANet.

Modules (imported directly, so ``import rrsis_geo.train`` stays light):
    losses      ``fianet_loss`` = 0.9·CE([0.9, 1.1]) + 0.1·summed Dice (SPEC §5)
    metrics     per-sample I/U, IoU, mIoU, oIoU, precision@0.5…0.9, ``MetricAccumulator`` (SPEC §6)
    evaluation  ``evaluate_model``, ``evaluate_weights``, ``TextFeatureCache``, ``format_table``
    loop        ``train(...)`` — the SPEC §5 recipe with model selection on val
"""
