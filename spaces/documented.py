"""The catalogue: every experiment the five reports in shared/seeds/ document.

Configurations use the spaces' parameter names. Accuracies are fractions. Where a report
contradicts itself, `notes` records the contradiction and the reading chosen: the one
that reproduces the report's own hard numbers (parameter counts first).
"""

from __future__ import annotations

from spaces.base import Claim, DocumentedExperiment

R000 = "000_9f6c1a89b5a01bd8.txt"
R001 = "001_828a9fe55790fed1.txt"
R002 = "002_16ca5ad2ec1c76f8.txt"
R003 = "003_66109265abd783a0.txt"
R004 = "004_29b974e46a9d6bfb.txt"


def _mlp(widths: tuple[int, ...], dropout: float, weight_decay: float,
         learning_rate: float = 1e-3, batch_size: int = 128) -> dict:
    return {
        "hidden_layers": widths,
        "dropout": dropout,
        "weight_decay": weight_decay,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
    }


# --- 000: three MLPs on KMNIST, 50 epochs each -------------------------------------------

R000_EXP1 = DocumentedExperiment(
    report=R000,
    name="Experiment 1",
    dataset="kmnist",
    config=_mlp((512, 256), 0.2, 0.0),
    epochs=50,
    validation="none: trained on all 60,000 training images, tested afterwards",
    claims=(
        Claim("test_accuracy", 0.9254, "Results: 'The test accuracy was 92.54%'"),
        Claim("param_count", 535_818, "computed from the stated 784-512-256-10 layers"),
    ),
)

R000_EXP2 = DocumentedExperiment(
    report=R000,
    name="Experiment 2",
    dataset="kmnist",
    config=_mlp((512, 256), 0.2, 1e-5),
    epochs=50,
    validation="20% of the training set by random_split (12,000 images)",
    claims=(
        Claim("val_accuracy", 0.9856, "Results: 'Validation Accuracy: Achieved a high 98.56%'"),
        Claim("test_accuracy", 0.9248, "Results: 'Test Accuracy: Recorded at 92.48%'"),
        Claim("param_count", 535_818, "computed from the stated 784-512-256-10 layers"),
    ),
)

R000_EXP3 = DocumentedExperiment(
    report=R000,
    name="Experiment 3",
    dataset="kmnist",
    config=_mlp((1024, 512), 0.5, 1e-5),
    epochs=50,
    validation="a separate validation set of 12,000 images",
    claims=(
        Claim("val_accuracy", 0.9678, "Results: 'Validation Accuracy was 96.78% on 12,000 samples'"),
        Claim("test_accuracy", 0.9226, "Results: 'Test Accuracy: 92.26% on 10,000 samples'"),
        Claim("val_loss", 0.14, "Results: validation loss 'to a low near 0.14'"),
        Claim("param_count", 1_333_770, "computed from the stated 784-1024-512-10 layers"),
    ),
)

# --- 001: two MLPs on KMNIST; optimiser, batch size and epochs unstated -------------------

R001_ARCH1 = DocumentedExperiment(
    report=R001,
    name="Architecture 1: Classifier_With_Dropout",
    dataset="kmnist",
    config=_mlp((512, 256, 128, 64), 0.5, 0.0),
    epochs=500,
    validation="a validation loss is logged; the split is not described",
    claims=(
        Claim("test_accuracy", 0.9114, "'Test Accuracy: 0.9114%' (a fraction printed with %)"),
        Claim("test_loss", 0.5445544123649597, "'Test Loss: 0.5445544123649597'"),
    ),
    notes=(
        "The hyper-parameter list says 3 hidden layers (512,256,128) with dropout 0.2; the "
        "architecture prose says fc1-fc4 (512,256,128,64) with nn.Dropout(p=0.5). No parameter "
        "count settles it; the prose, which names the code's layers, is used. The text also says "
        "'90%' test accuracy; the evaluation printout (91.14%) is used. Optimiser and batch size "
        "are unstated: Adam and 128 as in the other reports. Logs run to epoch 451 (500 assumed)."
    ),
)

R001_ARCH2 = DocumentedExperiment(
    report=R001,
    name="Architecture 2: Classifier",
    dataset="kmnist",
    config=_mlp((512, 256, 128, 64), 0.0, 0.0),
    epochs=500,
    validation="a validation loss is logged; the split is not described",
    claims=(
        Claim("test_accuracy", 0.9203, "'Test Accuracy: 92.03%'"),
        Claim("test_loss", 2.6002402305603027, "'Test Loss: 2.6002402305603027'"),
        Claim("param_count", 575_050, "computed from the stated 784-512-256-128-64-10 layers"),
    ),
    notes=(
        "The text says 'testing accuracy of 82%'; the evaluation printout and the per-class "
        "recalls give 92.03%, which is used. Learning rate unstated: 1e-3 as in Architecture 1."
    ),
)

# --- 002: three MLPs on KMNIST; the test set doubles as validation set --------------------

R002_EXP1 = DocumentedExperiment(
    report=R002,
    name="Experiment 1: L2 Regularization Architecture",
    dataset="kmnist",
    config=_mlp((128,), 0.2, 1e-5),
    epochs=500,
    validation="none: the test set is evaluated each epoch",
    claims=(
        Claim("test_accuracy", 0.8861, "'Test Loss: 0.7011, Accuracy: 88.61%'"),
        Claim("test_loss", 0.7011, "'Test Loss: 0.7011'"),
        Claim("train_accuracy", 0.9998, "results table: training accuracy 99.98%"),
        Claim("param_count", 101_770, "parameter table rows 100480 + 1290"),
    ),
    notes=(
        "The parameter table repeats the hidden layer as an 'Input' row (sum 202,250); the "
        "code's 784-128-10 gives 100,480 + 1,290 = 101,770, which reproduces every distinct row."
    ),
)

R002_EXP2 = DocumentedExperiment(
    report=R002,
    name="Experiment 2: Early Stopping Architecture",
    dataset="kmnist",
    config=_mlp((128,), 0.2, 0.0),
    epochs=500,
    early_stopping_patience=5,
    validation="none: early stopping watches the test loss (patience 5)",
    claims=(
        Claim("test_accuracy", 0.8881, "'Test Loss: 0.4233, Accuracy: 88.81%'"),
        Claim("test_loss", 0.4233, "'Test Loss: 0.4233'"),
        Claim("train_accuracy", 0.9911, "results table: training accuracy 99.11%"),
        Claim("stopped_epoch", 16, "'stopped after 16 epochs'"),
        Claim("param_count", 101_770, "same code as Experiment 1"),
    ),
    notes="Early stopping here watches our validation split instead of the test set.",
)

R002_EXP3 = DocumentedExperiment(
    report=R002,
    name="Experiment 3: L2 Regularization with Multiple Hidden Layers Architecture",
    dataset="kmnist",
    config=_mlp((256, 128, 64), 0.2, 1e-5),
    epochs=500,
    validation="none: the test set is evaluated each epoch",
    claims=(
        Claim("test_accuracy", 0.9834, "'Test Accuracy ... 98.34%'"),
        Claim("test_loss", 0.0732, "'Average Test Loss ... 0.0732'"),
        Claim("train_accuracy", 0.9982, "results table: training accuracy 99.82%"),
        Claim("param_count", 242_762, "parameter table rows 200960 + 32896 + 8256 + 650"),
    ),
    notes=(
        "The table repeats the first hidden layer as an 'Input' row; the code's 784-256-128-64-10 "
        "reproduces every distinct row (242,762). 98.34% is typical of MNIST, not KMNIST, and the "
        "code says 'assuming 10 for MNIST': the claim may come from a different dataset."
    ),
)
