"""The fine-tuning path of removal: LoRA SFT on candid gold answers, for what ablation leaves."""
