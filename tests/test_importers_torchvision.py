"""torchvision's classic image models import with equal outputs: AlexNet, VGG-11-BN, SqueezeNet 1.0, ResNet-18.

torchvision's wheels pin an exact torch build, so the architectures are written out here as
torchvision's models/alexnet.py, vgg.py, squeezenet.py and resnet.py define them (same module
names, layers and forward passes), with their default 1000 classes; the parameter counts are
torchvision's own. AlexNet and VGG end in an adaptive pool to 6x6 / 7x7 that is the identity at
their 224x224 input (the smallest size where it is exact); SqueezeNet and ResNet run at 64x64.
"""

import math

import numpy as np
import pytest

import layerdsl
from layerdsl.testing import ATOL, RTOL, run

torch = pytest.importorskip("torch")
nn = torch.nn


# --- the architectures, as torchvision defines them ------------------------------------------


class AlexNet(nn.Module):
    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x):
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


class VGG(nn.Module):
    def __init__(self, features: nn.Module, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x):
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def make_layers(cfg, batch_norm: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    in_channels = 3
    for v in cfg:
        if v == "M":
            layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
        else:
            conv2d = nn.Conv2d(in_channels, v, kernel_size=3, padding=1)
            if batch_norm:
                layers += [conv2d, nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
            else:
                layers += [conv2d, nn.ReLU(inplace=True)]
            in_channels = v
    return nn.Sequential(*layers)


def vgg11_bn() -> VGG:
    return VGG(make_layers([64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"], batch_norm=True))


class Fire(nn.Module):
    def __init__(self, inplanes: int, squeeze_planes: int, expand1x1_planes: int, expand3x3_planes: int) -> None:
        super().__init__()
        self.inplanes = inplanes
        self.squeeze = nn.Conv2d(inplanes, squeeze_planes, kernel_size=1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze_planes, expand1x1_planes, kernel_size=1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze_planes, expand3x3_planes, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat(
            [self.expand1x1_activation(self.expand1x1(x)), self.expand3x3_activation(self.expand3x3(x))], 1
        )


class SqueezeNet(nn.Module):
    """Version 1_0."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.features = nn.Sequential(
            nn.Conv2d(3, 96, kernel_size=7, stride=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(96, 16, 64, 64),
            Fire(128, 16, 64, 64),
            Fire(128, 32, 128, 128),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(256, 32, 128, 128),
            Fire(256, 48, 192, 192),
            Fire(384, 48, 192, 192),
            Fire(384, 64, 256, 256),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(512, 64, 256, 256),
        )
        final_conv = nn.Conv2d(512, self.num_classes, kernel_size=1)
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout), final_conv, nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1))
        )

    def forward(self, x):
        x = self.features(x)
        x = self.classifier(x)
        return torch.flatten(x, 1)


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(
        in_planes,
        out_planes,
        kernel_size=3,
        stride=stride,
        padding=dilation,
        groups=groups,
        bias=False,
        dilation=dilation,
    )


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion: int = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class ResNet(nn.Module):
    def __init__(self, block: type[BasicBlock], layers: list[int], num_classes: int = 1000) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block: type[BasicBlock], planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes))
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


def resnet18() -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2])


# --- the tests ---------------------------------------------------------------------------------


def randomize(module: nn.Module, seed: int = 0) -> None:
    """Fan-in scaled weights (outputs stay near 1) and non-trivial batchnorm statistics; eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point():
                continue
            uniform = torch.rand(tensor.shape, generator=generator)
            normal = torch.randn(tensor.shape, generator=generator)
            if name.endswith("running_var"):
                tensor.copy_(uniform + 0.5)
            elif tensor.dim() > 1:
                tensor.copy_(normal / math.sqrt(math.prod(tensor.shape[1:])))
            elif name.endswith("weight"):  # batchnorm's scale
                tensor.copy_(uniform + 0.5)
            else:
                tensor.copy_(normal * 0.1)
    module.eval()


def assert_imports_with_equal_outputs(original: nn.Module, size: int) -> layerdsl.Imported:
    randomize(original)
    imported = layerdsl.from_torch(original, (3, size, size))
    x = np.random.default_rng(1).normal(size=(1, size, size, 3)).astype("float32")
    with torch.no_grad():
        expected = original(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    assert np.abs(expected).max() > 0.1  # the comparison below is not of near-zeros
    for target in ("numpy", "torch"):
        live = layerdsl.build(imported.model, target)
        layerdsl.set_weights(live, imported.weights)
        np.testing.assert_allclose(run(target, live, imported.model, x), expected, atol=ATOL, rtol=RTOL)
        del live
    return imported


def test_alexnet_imports_with_equal_outputs():
    imported = assert_imports_with_equal_outputs(AlexNet(), 224)
    assert imported.model.trainable_params == 61_100_840  # torchvision's count
    # the adaptive pool to 6x6 is the identity on 6x6 features: nothing between the last pool and flatten
    assert "maxpool 3 stride=2 name=features_12\nflatten\ndropout 0.5 name=classifier_0\n" in imported.text


def test_vgg11_bn_imports_with_equal_outputs():
    imported = assert_imports_with_equal_outputs(vgg11_bn(), 224)
    assert imported.model.trainable_params == 132_868_840
    assert "conv2d 64 3 pad=same name=features_0\nbatchnorm eps=1e-05 momentum=0.9 name=features_1\n" in imported.text
    assert "maxpool 2 name=features_28\nflatten\n" in imported.text


def test_squeezenet1_0_imports_fire_modules_as_concat_with_equal_outputs():
    imported = assert_imports_with_equal_outputs(SqueezeNet(), 64)
    assert imported.model.trainable_params == 1_248_424
    assert imported.text.count("concat {") == 8
    assert (
        "conv2d 16 1 name=features_3_squeeze\nrelu name=features_3_squeeze_activation\nconcat {\n"
        "  conv2d 64 1 name=features_3_expand1x1\n  relu name=features_3_expand1x1_activation\n} {\n"
        "  conv2d 64 3 pad=same name=features_3_expand3x3\n  relu name=features_3_expand3x3_activation\n}\n"
    ) in imported.text
    # ceil_mode pools: 29x29 -> 14x14 is `valid`, 14x14 -> 7x7 is TensorFlow's `same`, 7x7 -> 3x3 `valid`
    assert "maxpool 3 stride=2 name=features_2\n" in imported.text
    assert "maxpool 3 stride=2 pad=same name=features_6\n" in imported.text
    assert "maxpool 3 stride=2 name=features_11\n" in imported.text
    assert imported.text.endswith("relu name=classifier_2\nglobalavgpool name=classifier_3\n")


def test_resnet18_imports_blocks_as_residuals_with_equal_outputs():
    imported = assert_imports_with_equal_outputs(resnet18(), 64)
    assert imported.model.trainable_params == 11_689_512
    assert imported.text.count("residual {") == 8
    # the stem's max pool pads 1 on each side after a relu, where zeros pad as torch's -inf does
    assert "relu name=relu\nzeropad2d 1\nmaxpool 3 stride=2 name=maxpool\n" in imported.text
    assert (
        "  batchnorm eps=1e-05 momentum=0.9 name=layer2_0_bn2\n} {\n"
        "  conv2d 128 1 stride=2 bias=false name=layer2_0_downsample_0\n"
        "  batchnorm eps=1e-05 momentum=0.9 name=layer2_0_downsample_1\n}\nrelu\n"
    ) in imported.text
    assert imported.text.endswith("globalavgpool name=avgpool\ndense 1000 name=fc\n")
