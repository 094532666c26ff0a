"""Default settings of the studies, importable without torch (the CLI shows them in --help)."""

GENDER_TEMPLATES = ("a photo of a {}",)  # the bundled emoji's: monoscope.data.emoji.GENDER
EPSILONS = (1.0, 2.0, 4.0, 8.0)  # L-inf budgets, in units of 1/255
OBJECTIVES = ("zeroshot", "matching")
ALPHAS = (0.0, 0.15, 0.3, 0.6, 1.0)
