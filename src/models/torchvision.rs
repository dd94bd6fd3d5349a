//! torchvision's state-dict names for dace's ResNets, and the ResNet a state dict describes.
//!
//! timm's `resnet18`/`resnet50` use the same names and shapes (its `ResNet` class was modelled on
//! torchvision's), so one table serves both: `conv1`/`bn1` (the stem), `layer{1-4}.{i}.conv1..3`
//! and `bn1..3`, `layer{s}.0.downsample.0` (1x1 conv) / `.1` (its batch norm), `fc`.

use std::collections::BTreeMap;

use super::resnet::{ResNetShape, BOTTLENECK_EXPANSION};
use super::ResNetBlock;

/// One tensor of a torchvision ResNet: its state-dict name, its path in dace's module (PyTorch
/// leaf names: `weight`/`bias` of a batch norm are burn's `gamma`/`beta`) and its PyTorch shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TorchTensor {
    pub key: String,
    pub path: String,
    pub shape: Vec<usize>,
}

fn conv(table: &mut Vec<TorchTensor>, key: &str, path: &str, out_ch: usize, in_ch: usize, kernel: usize) {
    table.push(TorchTensor { key: format!("{key}.weight"), path: format!("{path}.weight"), shape: vec![out_ch, in_ch, kernel, kernel] });
}

/// A batch norm's four tensors (`num_batches_tracked` only counts training steps: not read).
fn bn(table: &mut Vec<TorchTensor>, key: &str, path: &str, channels: usize) {
    for leaf in ["weight", "bias", "running_mean", "running_var"] {
        table.push(TorchTensor { key: format!("{key}.{leaf}"), path: format!("{path}.{leaf}"), shape: vec![channels] });
    }
}

/// Every tensor of torchvision's `ResNet(block, shape.blocks)` (7x7 stem, widths from `shape`)
/// for `in_channels`-channel images and `num_classes` classes, in state-dict order.
pub fn resnet_tensors(block: ResNetBlock, shape: &ResNetShape, in_channels: usize, num_classes: usize) -> Vec<TorchTensor> {
    let mut t = Vec::new();
    conv(&mut t, "conv1", "stem_conv", shape.stem_width, in_channels, 7);
    bn(&mut t, "bn1", "stem_bn", shape.stem_width);
    let mut in_ch = shape.stem_width;
    for (b, (stage, i, stride)) in shape.blocks().into_iter().enumerate() {
        let (key, path, planes) = (format!("layer{}.{i}", stage + 1), format!("blocks.{b}"), shape.planes(stage));
        let out_ch = match block {
            ResNetBlock::Basic => planes,
            ResNetBlock::Bottleneck => planes * BOTTLENECK_EXPANSION,
        };
        // A BasicBlock opens with a 3x3 convolution, a Bottleneck with a 1x1; both then a 3x3.
        let kernel1 = if block == ResNetBlock::Basic { 3 } else { 1 };
        conv(&mut t, &format!("{key}.conv1"), &format!("{path}.conv1"), planes, in_ch, kernel1);
        bn(&mut t, &format!("{key}.bn1"), &format!("{path}.bn1"), planes);
        conv(&mut t, &format!("{key}.conv2"), &format!("{path}.conv2"), planes, planes, 3);
        bn(&mut t, &format!("{key}.bn2"), &format!("{path}.bn2"), planes);
        if block == ResNetBlock::Bottleneck {
            conv(&mut t, &format!("{key}.conv3"), &format!("{path}.conv3"), out_ch, planes, 1);
            bn(&mut t, &format!("{key}.bn3"), &format!("{path}.bn3"), out_ch);
        }
        // torchvision's `_make_layer`: a projection wherever the block changes shape.
        if stride != 1 || in_ch != out_ch {
            conv(&mut t, &format!("{key}.downsample.0"), &format!("{path}.downsample.conv"), out_ch, in_ch, 1);
            bn(&mut t, &format!("{key}.downsample.1"), &format!("{path}.downsample.bn"), out_ch);
        }
        in_ch = out_ch;
    }
    t.push(TorchTensor { key: "fc.weight".into(), path: "fc.weight".into(), shape: vec![num_classes, in_ch] });
    t.push(TorchTensor { key: "fc.bias".into(), path: "fc.bias".into(), shape: vec![num_classes] });
    t
}

/// The ResNet a torchvision-named state dict holds, read off a few of its tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DetectedResNet {
    pub block: ResNetBlock,
    pub shape: ResNetShape,
    pub in_channels: usize,
    pub num_classes: usize,
}

impl DetectedResNet {
    /// "ResNet-50", or the block type and shape of another net.
    pub fn describe(&self) -> String {
        describe(self.block, &self.shape)
    }
}

/// "ResNet-18", "ResNet-50", or "a ResNet of Bottleneck blocks [1, 1, 1, 1], stem width 8, width 8".
pub fn describe(block: ResNetBlock, shape: &ResNetShape) -> String {
    match (block, *shape) {
        (ResNetBlock::Basic, ResNetShape::RESNET18) => "ResNet-18".into(),
        (ResNetBlock::Bottleneck, ResNetShape::RESNET50) => "ResNet-50".into(),
        _ => format!("a ResNet of {block:?} blocks {:?}, stem width {}, width {}", shape.blocks, shape.stem_width, shape.width),
    }
}

/// Block type (a `layer1.0.conv3` means Bottleneck), blocks per stage (`layer{s}.{i}.conv1`
/// counted), widths (`conv1` and `layer1.0.conv1` outputs), input channels and classes (`fc`)
/// of the ResNet whose tensor shapes are `shapes`; the error names the tensor that is missing or
/// odd. Whether every other tensor fits is for [`resnet_tensors`] to check.
pub fn detect_resnet(shapes: &BTreeMap<String, Vec<usize>>) -> Result<DetectedResNet, String> {
    let get = |key: &str, rank: usize| match shapes.get(key) {
        None => Err(format!("no tensor `{key}`: not a torchvision or timm ResNet")),
        Some(s) if s.len() != rank || s.contains(&0) => Err(format!("tensor `{key}` has shape {s:?}, not a {rank}-d ResNet tensor")),
        Some(s) => Ok(s.clone()),
    };
    let stem = get("conv1.weight", 4)?;
    if stem[2..] != [7, 7] {
        return Err(format!("`conv1.weight` has shape {stem:?}: a torchvision ResNet's stem is a 7x7 convolution"));
    }
    let first = get("layer1.0.conv1.weight", 4)?;
    let fc = get("fc.weight", 2)?;
    let block = if shapes.contains_key("layer1.0.conv3.weight") { ResNetBlock::Bottleneck } else { ResNetBlock::Basic };
    let mut blocks = [0; 4];
    for (stage, count) in blocks.iter_mut().enumerate() {
        while shapes.contains_key(&format!("layer{}.{count}.conv1.weight", stage + 1)) {
            *count += 1;
        }
        if *count == 0 {
            return Err(format!("no tensor `layer{}.0.conv1.weight`: not a four-stage torchvision or timm ResNet", stage + 1));
        }
    }
    let shape = ResNetShape { blocks, stem_width: stem[0], width: first[0] };
    Ok(DetectedResNet { block, shape, in_channels: stem[1], num_classes: fc[0] })
}
