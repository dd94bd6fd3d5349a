//! Loaders of `dace::data`: the embedded subset, every on-disk format with valid and broken
//! inputs (each error must name the file and the problem), resizing, subsets and augmentation.

use std::io::Write;
use std::path::{Path, PathBuf};

use dace::data::augment::{channel_mean_std, crop_flip, random_crop_flip, to_f32_normalized};
use dace::data::view::{self, CropBox};
use dace::data::{self, DataError, Dataset, LoadOptions, Pixels, Split};
use rand::SeedableRng;

// ---------- helpers ----------

fn idx_bytes(magic: u32, dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut out = magic.to_be_bytes().to_vec();
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(payload);
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// A tiny valid IDX dataset: `n_train`/`n_test` images of 2x3 pixels whose value is their label.
fn write_idx_dataset(dir: &Path, n_train: u32, n_test: u32, gz: bool) {
    let ext = if gz { ".gz" } else { "" };
    for (prefix, n) in [("train", n_train), ("t10k", n_test)] {
        let labels: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
        let pixels: Vec<u8> = labels.iter().flat_map(|&l| [l; 6]).collect();
        let images = idx_bytes(0x803, &[n, 2, 3], &pixels);
        let labels = idx_bytes(0x801, &[n], &labels);
        let (images, labels) = if gz { (gzip(&images), gzip(&labels)) } else { (images, labels) };
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte{ext}")), images).unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")), labels).unwrap();
    }
}

fn load_dir(dir: &Path) -> Result<Dataset, DataError> {
    data::load(dir.to_str().unwrap())
}

fn load_at(dir: &Path, size: [usize; 2], memory_limit: u64) -> Result<Dataset, DataError> {
    data::load_with(dir.to_str().unwrap(), &LoadOptions { size: Some(size), memory_limit })
}

/// The folder read from its files, however small it is.
fn load_lazily(dir: &Path) -> Dataset {
    data::load_with(dir.to_str().unwrap(), &LoadOptions { size: None, memory_limit: 0 }).unwrap()
}

/// An RGB PNG whose pixels differ with position and `seed`, so that crops and resizes show.
fn write_png_pattern(path: &Path, w: u32, h: u32, seed: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let pixel = |x: u32, y: u32| image::Rgb([(x * 37 + seed * 11) as u8, (y * 53 + seed * 7) as u8, ((x ^ y) * 29 + seed) as u8]);
    image::RgbImage::from_fn(w, h, pixel).save(path).unwrap();
}

/// Asserts that loading fails and the message mentions every fragment.
fn expect_error(dir: &Path, fragments: &[&str]) -> DataError {
    let err = load_dir(dir).expect_err("loading should fail");
    let msg = err.to_string();
    for f in fragments {
        assert!(msg.contains(f), "error message {msg:?} lacks {f:?}");
    }
    err
}

fn write_png_gray(path: &Path, w: u32, h: u32, value: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::GrayImage::from_pixel(w, h, image::Luma([value])).save(path).unwrap();
}

fn write_png_rgb(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(w, h, image::Rgb(rgb)).save(path).unwrap();
}

fn constant_dataset(c: usize, h: usize, w: usize, value: u8, n: usize) -> Dataset {
    Dataset {
        name: "const".into(),
        classes: vec!["a".into(), "b".into()],
        channels: c,
        height: h,
        width: w,
        train: Split::in_memory(vec![value; n * c * h * w], (0..n as u32).map(|i| i % 2).collect()),
        test: Split::in_memory(vec![value; c * h * w], vec![0]),
    }
}

// ---------- embedded and real Fashion-MNIST ----------

#[test]
fn embedded_subset_has_100_per_class() {
    let ds = data::load_embedded();
    assert_eq!((ds.channels, ds.height, ds.width), (1, 28, 28));
    assert_eq!(ds.num_classes(), 10);
    assert_eq!(ds.classes[0], "T-shirt/top");
    assert_eq!(ds.classes[9], "Ankle boot");
    assert_eq!((ds.train.len(), ds.test.len()), (1000, 1000));
    assert_eq!(ds.train.bytes().unwrap().len(), 1000 * 784);
    assert_eq!(Dataset::class_counts(&ds.train, 10), vec![100; 10]);
    assert_eq!(Dataset::class_counts(&ds.test, 10), vec![100; 10]);
    assert_eq!(ds.image_len(), 784);
    assert!(ds.image(&ds.train, 999).unwrap().iter().any(|&b| b > 0));
    assert_eq!(data::load("embedded").unwrap(), ds);
}

#[test]
fn full_fashion_mnist() {
    let dir = Path::new("/usr/share/datasets/fashion-mnist");
    // The suite's own set-up (scripts/test.sh) installs the package; a missing one is a failure,
    // not a silent skip that would leave the full-size loader untested.
    assert!(dir.is_dir(), "{} absent: run scripts/test.sh, or apt-get install dataset-fashion-mnist", dir.display());
    let ds = load_dir(dir).unwrap();
    assert_eq!(ds.name, "fashion-mnist");
    assert_eq!((ds.train.len(), ds.test.len()), (60000, 10000));
    assert_eq!((ds.channels, ds.height, ds.width), (1, 28, 28));
    assert_eq!(ds.classes[7], "Sneaker");
    assert_eq!(Dataset::class_counts(&ds.train, 10), vec![6000; 10]);
    // The embedded subset is the first 100 of each class, in order.
    let mini = ds.per_class_subset(100, 100);
    let embedded = data::load_embedded();
    assert_eq!(mini.train, embedded.train);
    assert_eq!(mini.test, embedded.test);
}

// ---------- IDX ----------

#[test]
fn idx_plain_and_gzip_load_alike() {
    for gz in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        write_idx_dataset(tmp.path(), 7, 4, gz);
        let ds = load_dir(tmp.path()).unwrap();
        assert_eq!((ds.channels, ds.height, ds.width), (1, 2, 3));
        assert_eq!((ds.train.len(), ds.test.len()), (7, 4));
        assert_eq!(ds.train.labels, vec![0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(*ds.image(&ds.train, 5).unwrap(), [2; 6]);
        assert_eq!(ds.classes, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
    }
}

#[test]
fn idx_gzip_is_detected_by_content_and_classes_txt_is_used() {
    let tmp = tempfile::tempdir().unwrap();
    write_idx_dataset(tmp.path(), 3, 3, true);
    // Gzipped content under the uncompressed name.
    let p = tmp.path();
    std::fs::rename(p.join("train-images-idx3-ubyte.gz"), p.join("train-images-idx3-ubyte")).unwrap();
    std::fs::write(p.join("classes.txt"), "zero\none\ntwo\n\n").unwrap();
    let ds = load_dir(p).unwrap();
    assert_eq!(ds.classes, vec!["zero", "one", "two"]);
    assert_eq!(ds.train.len(), 3);
}

#[test]
fn idx_truncated_images_name_file_and_sizes() {
    let tmp = tempfile::tempdir().unwrap();
    write_idx_dataset(tmp.path(), 5, 2, false);
    let path = tmp.path().join("train-images-idx3-ubyte");
    let full = std::fs::read(&path).unwrap();
    std::fs::write(&path, &full[..20]).unwrap();
    let err = expect_error(tmp.path(), &["train-images-idx3-ubyte", "truncated: expected 46 bytes, got 20"]);
    assert!(matches!(err, DataError::Truncated { expected: 46, got: 20, .. }));
}

#[test]
fn idx_bad_magic() {
    let tmp = tempfile::tempdir().unwrap();
    write_idx_dataset(tmp.path(), 2, 2, false);
    // An image file where the labels should be.
    let p = tmp.path();
    std::fs::copy(p.join("t10k-images-idx3-ubyte"), p.join("t10k-labels-idx1-ubyte")).unwrap();
    let err = expect_error(p, &["t10k-labels-idx1-ubyte", "bad magic number 0x00000803"]);
    assert!(matches!(err, DataError::BadMagic { found: 0x803, .. }));
}

#[test]
fn idx_label_count_mismatch() {
    let tmp = tempfile::tempdir().unwrap();
    write_idx_dataset(tmp.path(), 4, 2, false);
    let labels = idx_bytes(0x801, &[3], &[0, 1, 2]);
    std::fs::write(tmp.path().join("train-labels-idx1-ubyte"), labels).unwrap();
    let err = expect_error(tmp.path(), &["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "4 images", "3 labels"]);
    assert!(matches!(err, DataError::CountMismatch { images: 4, labels: 3, .. }));
}

#[test]
fn idx_corrupt_gzip() {
    let tmp = tempfile::tempdir().unwrap();
    write_idx_dataset(tmp.path(), 4, 2, true);
    let path = tmp.path().join("t10k-images-idx3-ubyte.gz");
    let mut bytes = std::fs::read(&path).unwrap();
    // Keep the gzip header, scramble the deflate stream.
    for b in bytes.iter_mut().skip(10) {
        *b ^= 0x5a;
    }
    std::fs::write(&path, &bytes).unwrap();
    let err = expect_error(tmp.path(), &["t10k-images-idx3-ubyte.gz", "gzip"]);
    assert!(matches!(err, DataError::Corrupt { .. }));

    // A gzip stream cut short is corrupt too.
    write_idx_dataset(tmp.path(), 4, 2, true);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    expect_error(tmp.path(), &["t10k-images-idx3-ubyte.gz", "gzip"]);
}

#[test]
fn idx_label_out_of_range_for_classes_txt() {
    let tmp = tempfile::tempdir().unwrap();
    write_idx_dataset(tmp.path(), 4, 2, false);
    std::fs::write(tmp.path().join("classes.txt"), "a\nb\n").unwrap();
    let err = expect_error(tmp.path(), &["train-labels-idx1-ubyte", "label 2 out of range for 2 classes"]);
    assert!(matches!(err, DataError::LabelOutOfRange { label: 2, classes: 2, .. }));
}

#[test]
fn idx_missing_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    write_idx_dataset(tmp.path(), 2, 2, false);
    std::fs::remove_file(tmp.path().join("t10k-labels-idx1-ubyte")).unwrap();
    expect_error(tmp.path(), &["t10k-labels-idx1-ubyte", "not found"]);
}

// ---------- CIFAR ----------

/// `n` CIFAR records; image `i` has red = i, green = 100 + i, blue = 200 + i.
fn cifar_records(label_bytes: &[u8], n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        out.extend_from_slice(label_bytes);
        for base in [0u8, 100, 200] {
            out.extend(std::iter::repeat_n(base + i as u8, 1024));
        }
    }
    out
}

fn write_cifar10(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for b in 1..=5 {
        std::fs::write(dir.join(format!("data_batch_{b}.bin")), cifar_records(&[b], 3)).unwrap();
    }
    std::fs::write(dir.join("test_batch.bin"), cifar_records(&[9], 3)).unwrap();
}

#[test]
fn cifar10_tiny_batches_load() {
    let tmp = tempfile::tempdir().unwrap();
    write_cifar10(tmp.path());
    let ds = load_dir(tmp.path()).unwrap();
    assert_eq!(ds.name, "cifar10");
    assert_eq!((ds.channels, ds.height, ds.width), (3, 32, 32));
    assert_eq!((ds.train.len(), ds.test.len()), (15, 3));
    assert_eq!(ds.train.labels[..4], [1, 1, 1, 2]);
    assert_eq!(ds.test.labels, vec![9, 9, 9]);
    assert_eq!(ds.classes[0], "airplane");
    let img = ds.image(&ds.train, 2).unwrap();
    assert_eq!((img[0], img[1024], img[2048]), (2, 102, 202));

    // Names from batches.meta.txt; its blank tail adds no classes.
    let names: String = (0..10).map(|i| format!("n{i}\n")).collect::<String>() + "\n\n";
    std::fs::write(tmp.path().join("batches.meta.txt"), names).unwrap();
    let ds = load_dir(tmp.path()).unwrap();
    assert_eq!(ds.classes[3], "n3");
    assert_eq!(ds.num_classes(), 10);
}

#[test]
fn cifar10_archive_subfolder_is_found() {
    let tmp = tempfile::tempdir().unwrap();
    write_cifar10(&tmp.path().join("cifar-10-batches-bin"));
    let ds = load_dir(tmp.path()).unwrap();
    assert_eq!(ds.train.len(), 15);
}

#[test]
fn cifar10_truncated_batch_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    write_cifar10(tmp.path());
    let mut bytes = cifar_records(&[0], 2);
    bytes.extend_from_slice(&[0; 100]);
    std::fs::write(tmp.path().join("data_batch_2.bin"), bytes).unwrap();
    let err = expect_error(tmp.path(), &["data_batch_2.bin", "truncated: expected 9219 bytes, got 6246"]);
    assert!(matches!(err, DataError::Truncated { .. }));
}

#[test]
fn cifar10_missing_batch_and_bad_label() {
    let tmp = tempfile::tempdir().unwrap();
    write_cifar10(tmp.path());
    std::fs::remove_file(tmp.path().join("data_batch_4.bin")).unwrap();
    expect_error(tmp.path(), &["data_batch_4.bin"]);

    write_cifar10(tmp.path());
    std::fs::write(tmp.path().join("test_batch.bin"), cifar_records(&[10], 1)).unwrap();
    expect_error(tmp.path(), &["test_batch.bin", "label 10 out of range for 10 classes"]);
}

#[test]
fn cifar100_tiny_uses_fine_labels() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("train.bin"), cifar_records(&[3, 42], 3)).unwrap();
    std::fs::write(tmp.path().join("test.bin"), cifar_records(&[19, 99], 2)).unwrap();
    let ds = load_dir(tmp.path()).unwrap();
    assert_eq!(ds.name, "cifar100");
    assert_eq!(ds.num_classes(), 100);
    assert_eq!(ds.classes[42], "class_42");
    assert_eq!(ds.train.labels, vec![42; 3]);
    assert_eq!(ds.test.labels, vec![99; 2]);
    assert_eq!(ds.image(&ds.test, 1).unwrap()[2048], 201);

    // A names file must list all 100 classes.
    std::fs::write(tmp.path().join("fine_label_names.txt"), "apple\nbanana\n").unwrap();
    expect_error(tmp.path(), &["fine_label_names.txt", "2 class names, expected 100"]);

    std::fs::remove_file(tmp.path().join("fine_label_names.txt")).unwrap();
    std::fs::write(tmp.path().join("test.bin"), &cifar_records(&[1, 2], 2)[..5000]).unwrap();
    expect_error(tmp.path(), &["test.bin", "truncated"]);
}

// ---------- ImageFolder ----------

#[test]
fn image_folder_train_test_gray() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("shapes");
    for (class, value) in [("circle", 10u8), ("square", 200)] {
        for i in 0..3 {
            write_png_gray(&root.join(format!("train/{class}/{i}.png")), 5, 4, value);
        }
        write_png_gray(&root.join(format!("val/{class}/t.PNG")), 5, 4, value);
    }
    std::fs::write(root.join("train/circle/notes.txt"), "ignored").unwrap();
    let ds = load_dir(&root).unwrap();
    assert_eq!(ds.name, "shapes");
    assert_eq!(ds.classes, vec!["circle", "square"]);
    assert_eq!((ds.channels, ds.height, ds.width), (1, 4, 5));
    assert_eq!((ds.train.len(), ds.test.len()), (6, 2));
    assert_eq!(ds.train.labels, vec![0, 0, 0, 1, 1, 1]);
    assert_eq!(*ds.image(&ds.train, 4).unwrap(), [200; 20]);
    assert_eq!(ds.test.labels, vec![0, 1]);
}

#[test]
fn image_folder_rgb_is_chw_and_jpeg_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_png_rgb(&root.join("train/a/0.png"), 3, 2, [1, 2, 3]);
    // One gray image among colour ones: everything becomes RGB.
    write_png_gray(&root.join("train/b/0.png"), 3, 2, 50);
    let jpg = root.join("test/a/0.jpg");
    std::fs::create_dir_all(jpg.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(3, 2, image::Rgb([128, 128, 128])).save(&jpg).unwrap();
    write_png_rgb(&root.join("test/b/0.png"), 3, 2, [9, 9, 9]);
    let ds = load_dir(root).unwrap();
    assert_eq!((ds.channels, ds.height, ds.width), (3, 2, 3));
    assert_eq!(*ds.image(&ds.train, 0).unwrap(), [1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3]);
    assert_eq!(*ds.image(&ds.train, 1).unwrap(), [50; 18]);
    assert!(ds.image(&ds.test, 0).unwrap().iter().all(|&b| b.abs_diff(128) <= 2));
}

#[test]
fn image_folder_without_split_takes_every_tenth_file() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    for i in 0..12 {
        write_png_gray(&root.join(format!("a/{i:02}.png")), 2, 2, i as u8);
    }
    for i in 0..3 {
        write_png_gray(&root.join(format!("b/{i}.png")), 2, 2, 100 + i as u8);
    }
    let ds = load_dir(root).unwrap();
    assert_eq!(Dataset::class_counts(&ds.train, 2), vec![10, 2]);
    assert_eq!(Dataset::class_counts(&ds.test, 2), vec![2, 1]);
    let test_firsts: Vec<u8> = (0..3).map(|i| ds.image(&ds.test, i).unwrap()[0]).collect();
    assert_eq!(test_firsts, vec![0, 10, 100]);
    assert_eq!(ds.image(&ds.train, 0).unwrap()[0], 1);
}

#[test]
fn image_folder_empty_class() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_png_gray(&root.join("train/cat/0.png"), 2, 2, 0);
    write_png_gray(&root.join("test/cat/0.png"), 2, 2, 0);
    std::fs::create_dir_all(root.join("train/dog")).unwrap();
    std::fs::create_dir_all(root.join("test/dog")).unwrap();
    let err = expect_error(root, &["train/dog", "empty class folder"]);
    assert!(matches!(err, DataError::EmptyClass { .. }));
}

#[test]
fn image_folder_garbage_png() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    for class in ["a", "b"] {
        write_png_gray(&root.join(format!("train/{class}/0.png")), 2, 2, 0);
        write_png_gray(&root.join(format!("test/{class}/0.png")), 2, 2, 0);
    }
    std::fs::write(root.join("train/b/broken.png"), b"this is not a png at all").unwrap();
    let err = expect_error(root, &["train/b/broken.png", "cannot read image"]);
    assert!(matches!(err, DataError::Image { .. }));
}

#[test]
fn image_folder_mixed_sizes_need_a_size() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_png_gray(&root.join("train/a/0.png"), 4, 4, 0);
    write_png_gray(&root.join("train/a/1.png"), 4, 4, 0);
    write_png_gray(&root.join("test/a/0.png"), 4, 4, 0);
    write_png_gray(&root.join("test/a/odd.png"), 5, 4, 0);
    let err = expect_error(root, &["train/a/0.png is 4x4", "test/a/odd.png is 5x4", "--resize"]);
    assert!(matches!(err, DataError::MixedSizes { .. }));
    // Given a size, every image is read at it.
    let ds = load_at(root, [3, 3], data::IN_MEMORY_LIMIT).unwrap();
    assert_eq!((ds.height, ds.width, ds.test.len()), (3, 3, 2));
}

#[test]
fn image_folder_train_and_test_classes_must_match() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_png_gray(&root.join("train/a/0.png"), 2, 2, 0);
    write_png_gray(&root.join("train/b/0.png"), 2, 2, 0);
    write_png_gray(&root.join("test/a/0.png"), 2, 2, 0);
    write_png_gray(&root.join("test/c/0.png"), 2, 2, 0);
    expect_error(root, &["test", "missing [\"b\"]", "extra [\"c\"]"]);
}

/// ImageNet-style class folders (WordNet ids) get human names from `LOC_synset_mapping.txt`:
/// the first synonym, or the whole list where two classes share it.
#[test]
fn image_folder_names_come_from_the_synset_mapping() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("imagenette");
    let wnids = ["n01440764", "n02012849", "n03126707"];
    for (i, wnid) in wnids.iter().enumerate() {
        write_png_rgb(&root.join(format!("train/{wnid}/a.JPEG")), 4, 4, [i as u8; 3]);
        write_png_rgb(&root.join(format!("val/{wnid}/b.JPEG")), 4, 4, [i as u8; 3]);
    }
    let mapping = "n01440764 tench, Tinca tinca\nn02012849 crane\nn03126707 crane, derrick\nn99999999 unused\n";
    std::fs::write(root.join("LOC_synset_mapping.txt"), mapping).unwrap();
    let ds = load_dir(&root).unwrap();
    assert_eq!(ds.classes, vec!["tench", "crane", "crane, derrick"]);
    // A mapping that misses a class folder is refused by name.
    std::fs::write(root.join("LOC_synset_mapping.txt"), "n01440764 tench\nn02012849 crane\n").unwrap();
    expect_error(&root, &["LOC_synset_mapping.txt", "2 of 3", "n03126707"]);
    // classes.txt wins over the mapping and may list names in class order.
    std::fs::write(root.join("classes.txt"), "fish\nbird\nmachine\n").unwrap();
    assert_eq!(load_dir(&root).unwrap().classes, vec!["fish", "bird", "machine"]);
    std::fs::write(root.join("classes.txt"), "fish\nbird\n").unwrap();
    expect_error(&root, &["classes.txt", "one name per line"]);
}

/// Tiny-ImageNet: `train/<wnid>/images/`, `val/images/` labelled by `val_annotations.txt`, an
/// unlabelled `test/images/`, names from `words.txt`.
#[test]
fn tiny_imagenet_layout_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tiny-imagenet-200");
    let wnids = ["n01443537", "n01629819"];
    for (c, wnid) in wnids.iter().enumerate() {
        for i in 0..2 {
            write_png_rgb(&root.join(format!("train/{wnid}/images/{wnid}_{i}.JPEG")), 6, 6, [10 * c as u8; 3]);
        }
        std::fs::write(root.join(format!("train/{wnid}/{wnid}_boxes.txt")), "ignored").unwrap();
    }
    for (i, c) in [1, 0, 1].iter().enumerate() {
        write_png_rgb(&root.join(format!("val/images/val_{i}.JPEG")), 6, 6, [10 * *c as u8; 3]);
    }
    write_png_rgb(&root.join("test/images/test_0.JPEG"), 6, 6, [0; 3]);
    let annotations = "val_0.JPEG\tn01629819\t0\t0\t5\t5\nval_1.JPEG\tn01443537\t0\t0\t5\t5\nval_2.JPEG\tn01629819\t1\t1\t4\t4\n";
    std::fs::write(root.join("val/val_annotations.txt"), annotations).unwrap();
    std::fs::write(
        root.join("words.txt"),
        "n00001740\tentity\nn01443537\tgoldfish, Carassius auratus\nn01629819\tEuropean fire salamander, Salamandra salamandra\n",
    )
    .unwrap();
    let ds = load_dir(&root).unwrap();
    assert_eq!(ds.classes, vec!["goldfish", "European fire salamander"]);
    assert_eq!((ds.channels, ds.height, ds.width), (3, 6, 6));
    assert_eq!(ds.train.labels, vec![0, 0, 1, 1]);
    assert_eq!(ds.test.labels, vec![0, 1, 1]);
    assert_eq!(ds.image(&ds.test, 1).unwrap()[0], 10);
    // A label that is not a train class, and a listed file that is not there, are named.
    std::fs::write(root.join("val/val_annotations.txt"), "val_0.JPEG\tn00000000\t0\t0\t5\t5\n").unwrap();
    expect_error(&root, &["val_annotations.txt", "line 1", "n00000000"]);
    std::fs::write(root.join("val/val_annotations.txt"), "missing.JPEG\tn01443537\n").unwrap();
    expect_error(&root, &["val_annotations.txt", "missing.JPEG"]);
}

/// `--classes`: a file of one name per line keeps commas inside names; otherwise a comma list.
#[test]
fn class_lists_come_from_a_file_or_commas() {
    use dace::data::names::class_list;
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("classes.txt");
    std::fs::write(&file, "# ImageNet\ntench, Tinca tinca\n\ngoldfish\n").unwrap();
    assert_eq!(class_list(file.to_str().unwrap()).unwrap(), vec!["tench, Tinca tinca", "goldfish"]);
    assert_eq!(class_list("cat, dog,bird").unwrap(), vec!["cat", "dog", "bird"]);
    std::fs::write(&file, "\n# nothing\n").unwrap();
    let err = class_list(file.to_str().unwrap()).unwrap_err().to_string();
    assert!(err.contains("classes.txt") && err.contains("no class names"), "{err}");
    assert!(class_list(" , ").is_err());
    // ImageNet's LOC_synset_mapping.txt: the ids go, the first synonym stays unless it is shared.
    let mapping = tmp.path().join("LOC_synset_mapping.txt");
    std::fs::write(&mapping, "n01440764 tench, Tinca tinca\nn02012849 crane\nn03126707 crane, derrick\n").unwrap();
    assert_eq!(class_list(mapping.to_str().unwrap()).unwrap(), vec!["tench", "crane", "crane, derrick"]);
    // A list where only some lines start with an id is kept as written.
    std::fs::write(&mapping, "n01440764 tench\nplain name\n").unwrap();
    assert_eq!(class_list(mapping.to_str().unwrap()).unwrap(), vec!["n01440764 tench", "plain name"]);
}

#[test]
fn unknown_and_missing_paths() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("readme.txt"), "nothing here").unwrap();
    let err = expect_error(tmp.path(), &["unknown dataset format"]);
    assert!(matches!(err, DataError::UnknownFormat { .. }));
    let missing: PathBuf = tmp.path().join("nope");
    expect_error(&missing, &["nope"]);
}

// ---------- transformations ----------

#[test]
fn resize_28_to_32_keeps_constant_images() {
    let ds = constant_dataset(1, 28, 28, 77, 4);
    let big = ds.resized(32, 32);
    assert_eq!((big.channels, big.height, big.width), (1, 32, 32));
    assert_eq!(big.train.bytes().unwrap().len(), 4 * 32 * 32);
    assert_eq!(big.train.labels, ds.train.labels);
    assert!(big.train.bytes().unwrap().iter().all(|&b| b == 77));
    assert_eq!(ds.resized(28, 28), ds);

    let rgb = constant_dataset(3, 4, 6, 5, 2).resized(8, 3);
    assert_eq!(rgb.image_len(), 3 * 8 * 3);
    assert_eq!(rgb.test.bytes().unwrap().len(), 72);

    let embedded = data::load_embedded().resized(32, 32);
    assert_eq!(embedded.train.bytes().unwrap().len(), 1000 * 1024);
}

#[test]
fn per_class_subset_takes_first_k_in_order() {
    let mut ds = constant_dataset(1, 1, 1, 0, 6);
    ds.train.pixels = Pixels::Memory(vec![0, 1, 2, 3, 4, 5]);
    let sub = ds.per_class_subset(2, 5);
    assert_eq!(sub.train.labels, vec![0, 1, 0, 1]);
    assert_eq!(sub.train.bytes().unwrap(), [0, 1, 2, 3]);
    assert_eq!(sub.test.len(), 1);
    let mini = data::load_embedded().per_class_subset(10, 1);
    assert_eq!(Dataset::class_counts(&mini.train, 10), vec![10; 10]);
    assert_eq!(mini.test.len(), 10);
}

// ---------- augmentation ----------

#[test]
fn crop_flip_identity_shift_and_mirror() {
    let (c, h, w) = (2, 3, 4);
    let img: Vec<f32> = (0..c * h * w).map(|i| i as f32 + 1.0).collect();
    let mut out = vec![0.0; img.len()];
    crop_flip(&img, c, h, w, 0, 0, 0, false, &mut out);
    assert_eq!(out, img);
    crop_flip(&img, c, h, w, 2, 2, 2, false, &mut out);
    assert_eq!(out, img);

    // Window moved one pixel right: columns shift left, the last column is padding.
    crop_flip(&img, c, h, w, 1, 1, 2, false, &mut out);
    assert_eq!(&out[..4], &[2.0, 3.0, 4.0, 0.0]);
    // Moved one pixel up: the first row is padding.
    crop_flip(&img, c, h, w, 1, 0, 1, false, &mut out);
    assert_eq!(&out[..4], &[0.0; 4]);
    assert_eq!(&out[4..8], &img[..4]);

    crop_flip(&img, c, h, w, 0, 0, 0, true, &mut out);
    assert_eq!(&out[..4], &[4.0, 3.0, 2.0, 1.0]);
    let mut back = vec![0.0; img.len()];
    crop_flip(&out, c, h, w, 0, 0, 0, true, &mut back);
    assert_eq!(back, img);
}

#[test]
fn random_crop_flip_with_no_pad_is_identity_or_mirror() {
    let (c, h, w) = (1, 2, 3);
    let img: Vec<f32> = (0..6).map(|i| i as f32).collect();
    let mirror = vec![2.0, 1.0, 0.0, 5.0, 4.0, 3.0];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut out = vec![0.0; 6];
    let (mut same, mut flipped) = (0, 0);
    for _ in 0..200 {
        random_crop_flip(&img, c, h, w, 0, true, &mut rng, &mut out);
        if out == img {
            same += 1;
        } else {
            assert_eq!(out, mirror);
            flipped += 1;
        }
    }
    assert!(same > 60 && flipped > 60, "flip is not ~50%: {same} / {flipped}");

    // With padding, every output value is a pixel of the image or padding.
    for _ in 0..50 {
        random_crop_flip(&img, c, h, w, 2, true, &mut rng, &mut out);
        assert!(out.iter().all(|v| (0.0..=5.0).contains(v)));
    }

    // Flipping disabled and no padding: always the identity.
    for _ in 0..20 {
        random_crop_flip(&img, c, h, w, 0, false, &mut rng, &mut out);
        assert_eq!(out, img);
    }
    // The crop drawn for a seed does not depend on whether flipping is enabled.
    let mut a = vec![0.0; 6];
    let mut b = vec![0.0; 6];
    for seed in 0..20 {
        let mut r1 = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut r2 = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        random_crop_flip(&img, c, h, w, 1, true, &mut r1, &mut a);
        random_crop_flip(&img, c, h, w, 1, false, &mut r2, &mut b);
        let mut unflipped = vec![0.0; 6];
        crop_flip(&a, c, h, w, 0, 0, 0, true, &mut unflipped);
        assert!(a == b || unflipped == b, "seed {seed}: {a:?} vs {b:?}");
    }
}

#[test]
fn normalisation_and_channel_statistics() {
    let mut out = vec![0.0; 4];
    to_f32_normalized(&[0, 255, 51, 102], &[0.0, 0.2], &[1.0, 0.5], 2, &mut out);
    let expected = [0.0, 1.0, 0.0, 0.4];
    for (o, e) in out.iter().zip(expected) {
        assert!((o - e).abs() < 1e-6, "{out:?}");
    }

    // Channel 0 constant 51 (std falls back to 1), channel 1 alternating 0 / 255.
    let mut ds = constant_dataset(2, 1, 2, 51, 2);
    ds.train.pixels = Pixels::Memory(vec![51, 51, 0, 255, 51, 51, 255, 0]);
    let (mean, std) = channel_mean_std(&ds).unwrap();
    assert!((mean[0] - 0.2).abs() < 1e-6 && std[0] == 1.0);
    assert!((mean[1] - 0.5).abs() < 1e-6 && (std[1] - 0.5).abs() < 1e-6);

    let (mean, std) = channel_mean_std(&data::load_embedded()).unwrap();
    assert!(mean[0] > 0.2 && mean[0] < 0.4 && std[0] > 0.25 && std[0] < 0.45, "{mean:?} {std:?}");
}

#[test]
fn fetch_rejects_unknown_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let err = data::fetch("imagenet", tmp.path()).unwrap_err();
    assert!(err.to_string().contains("unknown dataset 'imagenet'"), "{err}");
}

/// Two classes of `per_class` RGB pattern images, in train/ and test/ (one test image per class).
fn pattern_folder(root: &Path, per_class: u32, w: u32, h: u32) {
    for class in 0..2 {
        for i in 0..per_class {
            write_png_pattern(&root.join(format!("train/c{class}/{i}.png")), w, h, class * 100 + i);
        }
        write_png_pattern(&root.join(format!("test/c{class}/0.png")), w, h, class * 100 + 99);
    }
}

#[test]
fn a_folder_read_from_its_files_gives_the_pixels_of_one_held_in_memory() {
    let tmp = tempfile::tempdir().unwrap();
    pattern_folder(tmp.path(), 5, 6, 6);
    let memory = load_dir(tmp.path()).unwrap();
    let lazy = load_lazily(tmp.path());
    assert!(!memory.train.is_lazy() && lazy.train.is_lazy() && lazy.test.is_lazy());
    assert_eq!((lazy.channels, lazy.height, lazy.width), (3, 6, 6));
    assert_eq!(lazy.train.labels, memory.train.labels);
    for i in 0..memory.train.len() {
        assert_eq!(lazy.image(&lazy.train, i).unwrap(), memory.image(&memory.train, i).unwrap(), "train image {i}");
    }
    assert_eq!(channel_mean_std(&lazy).unwrap(), channel_mean_std(&memory).unwrap());
    // Subsets keep the storage and select the same images.
    let (sub_lazy, sub_memory) = (lazy.per_class_subset(2, 1), memory.per_class_subset(2, 1));
    assert!(sub_lazy.train.is_lazy());
    assert_eq!(sub_lazy.train.labels, sub_memory.train.labels);
    for i in 0..sub_lazy.train.len() {
        assert_eq!(sub_lazy.image(&sub_lazy.train, i).unwrap(), sub_memory.image(&sub_memory.train, i).unwrap());
    }
    // Resizing a lazy dataset only changes the size its files are read at.
    let small = lazy.resized(3, 3);
    assert!(small.train.is_lazy());
    assert_eq!(small.image(&small.train, 0).unwrap().len(), 27);
}

#[test]
fn the_evaluation_view_is_the_centred_box_of_the_target_aspect() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::create_dir_all(root.join("a")).unwrap();
    // 8 wide, 4 tall: column x has value 30x; a 4x4 view keeps columns 2..6 unscaled.
    image::GrayImage::from_fn(8, 4, |x, _| image::Luma([(30 * x) as u8])).save(root.join("a/wide.png")).unwrap();
    // 4 wide, 8 tall: row y has value 20y; the view keeps rows 2..6.
    image::GrayImage::from_fn(4, 8, |_, y| image::Luma([(20 * y) as u8])).save(root.join("a/tall.png")).unwrap();
    let ds = load_at(root, [4, 4], 0).unwrap();
    let (test, train) = (ds.image(&ds.test, 0).unwrap(), ds.image(&ds.train, 0).unwrap());
    // Every tenth file (the first: tall.png) is the test image.
    let rows: Vec<u8> = (2..6).flat_map(|y| [20 * y; 4]).collect();
    assert_eq!(*test, rows[..]);
    let columns: Vec<u8> = (0..4).flat_map(|_| [60, 90, 120, 150]).collect();
    assert_eq!(*train, columns[..]);

    assert_eq!(view::centre_box(8, 4, [4, 4]), CropBox { left: 2, top: 0, width: 4, height: 4 });
    assert_eq!(view::centre_box(500, 375, [224, 224]), CropBox { left: 62, top: 0, width: 375, height: 375 });
    // An odd margin leaves the extra row below, as torchvision's `center_crop` rounds it.
    assert_eq!(view::centre_box(3, 3, [2, 4]), CropBox { left: 0, top: 0, width: 3, height: 2 });
}

#[test]
fn random_resized_crops_stay_inside_and_follow_the_seed() {
    for (w, h) in [(300, 200), (1000, 10), (10, 1000), (5, 5), (1, 1), (2, 7)] {
        let mut areas = Vec::new();
        for seed in 0..200 {
            let draw = || view::random_resized_box(w, h, &mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
            let b = draw();
            assert_eq!(b, draw(), "seed {seed} drew two boxes");
            assert!(b.width >= 1 && b.height >= 1 && b.left + b.width <= w && b.top + b.height <= h, "{w}x{h}: {b:?}");
            areas.push(f64::from(b.width * b.height) / f64::from(w * h));
        }
        if (w, h) == (300, 200) {
            // Areas are drawn from 8-100 % of the image.
            let (lo, hi) = (areas.iter().copied().fold(f64::NAN, f64::min), areas.iter().copied().fold(f64::NAN, f64::max));
            assert!(lo >= 0.075 && hi <= 1.0 && hi - lo > 0.5, "areas {lo}..{hi}");
        }
    }
    // A constant image stays constant through the crop; the view has the asked shape.
    let img = vec![9u8; 3 * 5 * 7];
    let out = view::random_resized_crop_chw(&img, [3, 5, 7], true, &mut rand_chacha::ChaCha8Rng::seed_from_u64(3));
    assert_eq!(out, vec![9u8; 3 * 5 * 7]);
}

#[test]
fn webp_greyscale_jpeg_and_cmyk_jpeg_load() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    for i in 0..2 {
        let webp = root.join(format!("webp/{i}.webp"));
        std::fs::create_dir_all(webp.parent().unwrap()).unwrap();
        let rgb = image::RgbImage::from_pixel(12, 8, image::Rgb([10, 20, 30]));
        let encoder = image::codecs::webp::WebPEncoder::new_lossless(std::fs::File::create(&webp).unwrap());
        encoder.encode(rgb.as_raw(), 12, 8, image::ExtendedColorType::Rgb8).unwrap();
        let grey = root.join(format!("grey/{i}.jpg"));
        std::fs::create_dir_all(grey.parent().unwrap()).unwrap();
        image::GrayImage::from_pixel(12, 8, image::Luma([100])).save(&grey).unwrap();
        let cmyk = root.join(format!("cmyk/{i}.jpg"));
        std::fs::create_dir_all(cmyk.parent().unwrap()).unwrap();
        std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images/cmyk.jpg"), &cmyk).unwrap();
    }
    let ds = load_dir(root).unwrap();
    assert_eq!((ds.channels, ds.height, ds.width), (3, 8, 12));
    let centre = |class: u32| -> Vec<u8> {
        let i = ds.test.labels.iter().position(|&l| l == class).unwrap();
        let img = ds.image(&ds.test, i).unwrap();
        (0..3).map(|c| img[c * 96 + 4 * 12 + 6]).collect()
    };
    assert_eq!(centre(2), [10, 20, 30], "webp");
    assert!(centre(1).iter().all(|&v| v.abs_diff(100) <= 2), "grey jpeg {:?}", centre(1));
    let cmyk = centre(0);
    assert!(cmyk.iter().zip([200u8, 40, 40]).all(|(&v, e)| v.abs_diff(e) <= 8), "cmyk jpeg decoded to {cmyk:?}");
}

#[test]
fn a_file_that_breaks_after_indexing_is_named_when_read() {
    let tmp = tempfile::tempdir().unwrap();
    pattern_folder(tmp.path(), 3, 6, 6);
    let ds = load_lazily(tmp.path());
    let broken = tmp.path().join("train/c0/1.png");
    std::fs::write(&broken, b"not an image any more").unwrap();
    let err = ds.image(&ds.train, 1).unwrap_err().to_string();
    assert!(err.contains("train/c0/1.png") && err.contains("cannot read image"), "{err}");
    write_png_pattern(&broken, 7, 6, 0);
    let err = ds.image(&ds.train, 1).unwrap_err().to_string();
    assert!(err.contains("train/c0/1.png") && err.contains("is 7x6 but was 6x6"), "{err}");
    // Batches report it too, instead of panicking in a worker thread.
    let norm = dace::train::Normalization { mean: vec![0.5; 3], std: vec![0.25; 3] };
    let batcher = dace::train::ImageBatcher::plain(&ds, norm);
    let err = batcher.images::<dace::device::CpuBackend>(&ds.train, &[0, 1, 2], None, &Default::default()).unwrap_err();
    assert!(err.to_string().contains("train/c0/1.png"), "{err}");
}
