//! Computer-vision kernels for the mock CV job: synthetic video of bright
//! blobs drifting over noise, run through a blur and then blob detection,
//! Otsu segmentation or background subtraction, with a connected-component
//! count per frame.

use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde_json::{Value, json};

use super::{round_to, run_paced};
use crate::tasks::{TaskContext, TaskError};

/// Frame width in pixels.
const WIDTH: usize = 320;
/// Frame height in pixels.
const HEIGHT: usize = 240;
/// Components smaller than this many pixels are noise, not objects.
const MIN_AREA: usize = 12;
/// Blurred intensity above which a pixel belongs to a detected blob.
const DETECTION_THRESHOLD: f32 = 0.5;
/// Difference from the background above which a pixel is moving.
const MOTION_THRESHOLD: f32 = 0.2;
/// How fast the background model follows the video.
const BACKGROUND_RATE: f32 = 0.05;

/// Which kernel an operation name runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    Detection,
    Segmentation,
    BackgroundSubtraction,
}

impl Kernel {
    /// Picks the kernel for a name; unknown names run detection.
    fn for_operation(operation: &str) -> Self {
        let name = operation.to_ascii_lowercase();
        if name.contains("segment") {
            Self::Segmentation
        } else if name.contains("background") {
            Self::BackgroundSubtraction
        } else {
            Self::Detection
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Detection => "blob_detection",
            Self::Segmentation => "otsu_segmentation",
            Self::BackgroundSubtraction => "background_subtraction",
        }
    }
}

/// Runs the CV job; see [`super::run_cv`].
pub(super) fn run(
    ctx: &TaskContext,
    duration: Duration,
    operation: &str,
) -> Result<Value, TaskError> {
    let start = Instant::now();
    ctx.checkpoint()?;
    let kernel = Kernel::for_operation(operation);
    let mut pipeline = Pipeline::new(ctx.task_id.0, kernel);
    let paced = run_paced(ctx, start, duration, |frames| {
        pipeline.process(frames);
    })?;
    let frames = pipeline.frames.max(1) as f64;
    let pixels = frames * (WIDTH * HEIGHT) as f64;
    let mut summary = json!({
        "operation": operation,
        "kernel": kernel.name(),
        "frames": pipeline.frames,
        "width": WIDTH,
        "height": HEIGHT,
        "objects_detected": pipeline.objects_total,
        "objects_per_frame": round_to(pipeline.objects_total as f64 / frames, 2),
        "mean_intensity": round_to(pipeline.intensity_sum / frames, 4),
        "foreground_ratio": round_to(pipeline.foreground_pixels as f64 / pixels, 4),
        "fps": round_to(paced.units_per_sec(), 1),
        "duration_ms": paced.elapsed_ms(),
    });
    if kernel == Kernel::Segmentation
        && let Value::Object(map) = &mut summary
    {
        map.insert(
            "threshold".to_owned(),
            json!(round_to(pipeline.threshold_sum / frames, 4)),
        );
    }
    Ok(summary)
}

/// One bright blob that drifts and bounces off the frame's edges.
#[derive(Debug, Clone, Copy)]
struct Blob {
    x: f32,
    y: f32,
    vx: f32,
    vy: f32,
    radius: f32,
    amplitude: f32,
}

/// The synthetic video: blobs moving over fresh noise each frame. Every
/// frame is a pure function of the seed and the frame number.
struct Scene {
    seed: u64,
    frame: u64,
    blobs: Vec<Blob>,
}

impl Scene {
    fn new(seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let count = rng.usize(3..=7);
        let blobs = (0..count)
            .map(|_| {
                let radius = 6.0 + 8.0 * rng.f32();
                let speed = |rng: &mut fastrand::Rng| (rng.f32() * 2.0 - 1.0) * 3.0;
                Blob {
                    x: radius + rng.f32() * (WIDTH as f32 - 2.0 * radius),
                    y: radius + rng.f32() * (HEIGHT as f32 - 2.0 * radius),
                    vx: speed(&mut rng),
                    vy: speed(&mut rng),
                    radius,
                    amplitude: 0.6 + 0.2 * rng.f32(),
                }
            })
            .collect();
        Self {
            seed,
            frame: 0,
            blobs,
        }
    }

    /// Moves every blob one frame on.
    fn advance(&mut self) {
        self.frame += 1;
        for blob in &mut self.blobs {
            (blob.x, blob.vx) = bounce(
                blob.x + blob.vx,
                blob.vx,
                blob.radius,
                WIDTH as f32 - blob.radius,
            );
            (blob.y, blob.vy) = bounce(
                blob.y + blob.vy,
                blob.vy,
                blob.radius,
                HEIGHT as f32 - blob.radius,
            );
        }
    }

    /// Draws the current frame into `out` (row-major, values in 0..=1),
    /// one row per parallel work item with its own seeded noise.
    fn render(&self, out: &mut [f32]) {
        let (seed, frame, blobs) = (self.seed, self.frame, &self.blobs);
        out.par_chunks_mut(WIDTH).enumerate().for_each(|(y, row)| {
            let row_seed = seed
                ^ frame.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ (y as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
            let mut rng = fastrand::Rng::with_seed(row_seed);
            for pixel in row.iter_mut() {
                *pixel = 0.1 + 0.15 * rng.f32();
            }
            for blob in blobs {
                let dy = y as f32 - blob.y;
                let radius_sq = blob.radius * blob.radius;
                if dy * dy >= radius_sq {
                    continue;
                }
                let half = (radius_sq - dy * dy).sqrt();
                // Float-to-int casts saturate, so spans off the left edge start at 0.
                let first = (blob.x - half).floor() as usize;
                let last = (blob.x + half).ceil() as usize;
                for x in first..=last.min(WIDTH - 1) {
                    let dx = x as f32 - blob.x;
                    let weight = 1.0 - (dx * dx + dy * dy) / radius_sq;
                    if let (Some(pixel), true) = (row.get_mut(x), weight > 0.0) {
                        *pixel += blob.amplitude * weight;
                    }
                }
            }
            for pixel in row.iter_mut() {
                *pixel = pixel.min(1.0);
            }
        });
    }
}

/// Reflects a coordinate that left `low..=high`, returning it and its new
/// velocity.
fn bounce(position: f32, velocity: f32, low: f32, high: f32) -> (f32, f32) {
    if position < low {
        (low, velocity.abs())
    } else if position > high {
        (high.max(low), -velocity.abs())
    } else {
        (position, velocity)
    }
}

/// Buffers and running totals for processing the video frame by frame.
struct Pipeline {
    kernel: Kernel,
    scene: Scene,
    frame: Vec<f32>,
    blurred: Vec<f32>,
    background: Vec<f32>,
    mask: Vec<u8>,
    components: Components,
    frames: u64,
    objects_total: u64,
    foreground_pixels: u64,
    intensity_sum: f64,
    threshold_sum: f64,
}

impl Pipeline {
    fn new(seed: u64, kernel: Kernel) -> Self {
        let pixels = WIDTH * HEIGHT;
        Self {
            kernel,
            scene: Scene::new(seed),
            frame: vec![0.0; pixels],
            blurred: vec![0.0; pixels],
            background: Vec::new(),
            mask: vec![0; pixels],
            components: Components::default(),
            frames: 0,
            objects_total: 0,
            foreground_pixels: 0,
            intensity_sum: 0.0,
            threshold_sum: 0.0,
        }
    }

    /// Renders and analyses `frames` frames; returns the objects found in
    /// the last one.
    fn process(&mut self, frames: u32) -> usize {
        let mut objects = 0;
        for _ in 0..frames {
            objects = self.process_one();
        }
        objects
    }

    fn process_one(&mut self) -> usize {
        self.scene.render(&mut self.frame);
        let intensity = self.frame.par_iter().map(|&p| f64::from(p)).sum::<f64>();
        self.intensity_sum += intensity / self.frame.len().max(1) as f64;
        box_blur(&self.frame, &mut self.blurred, WIDTH);
        match self.kernel {
            Kernel::Detection => threshold(&self.blurred, &mut self.mask, DETECTION_THRESHOLD),
            Kernel::Segmentation => {
                let level = otsu_threshold(&self.blurred);
                self.threshold_sum += f64::from(level);
                threshold(&self.blurred, &mut self.mask, level);
            }
            Kernel::BackgroundSubtraction => self.subtract_background(),
        }
        let (objects, foreground) = self.components.count(&self.mask, WIDTH, MIN_AREA);
        self.frames += 1;
        self.objects_total += objects as u64;
        self.foreground_pixels += foreground as u64;
        self.scene.advance();
        objects
    }

    /// Marks pixels that differ from the background model as moving, then
    /// moves the model a little towards the current frame.
    fn subtract_background(&mut self) {
        if self.background.len() != self.blurred.len() {
            self.background.clone_from(&self.blurred);
        }
        self.mask
            .par_iter_mut()
            .zip(self.background.par_iter_mut())
            .zip(self.blurred.par_iter())
            .for_each(|((mask, background), &value)| {
                let difference = value - *background;
                *mask = u8::from(difference.abs() > MOTION_THRESHOLD);
                *background += BACKGROUND_RATE * difference;
            });
    }
}

/// A 3x3 box blur with edges clamped, one row per parallel work item.
fn box_blur(source: &[f32], out: &mut [f32], width: usize) {
    if width == 0 {
        return;
    }
    let height = source.len() / width;
    out.par_chunks_mut(width).enumerate().for_each(|(y, row)| {
        let line = |y: usize| source.get(y * width..(y + 1) * width);
        let (Some(up), Some(middle), Some(down)) = (
            line(y.saturating_sub(1)),
            line(y),
            line((y + 1).min(height.saturating_sub(1))),
        ) else {
            return;
        };
        for (x, pixel) in row.iter_mut().enumerate() {
            let (left, right) = (x.saturating_sub(1), (x + 1).min(width - 1));
            let sum: f32 = [up, middle, down]
                .iter()
                .map(|line| line[left] + line[x] + line[right])
                .sum();
            *pixel = sum / 9.0;
        }
    });
}

/// Sets each mask pixel to 1 where the image is above `level`.
fn threshold(image: &[f32], mask: &mut [u8], level: f32) {
    mask.par_iter_mut()
        .zip(image.par_iter())
        .for_each(|(mask, &value)| *mask = u8::from(value > level));
}

/// Otsu's threshold for an image with values in 0..=1: the level that best
/// separates its histogram into two classes.
fn otsu_threshold(image: &[f32]) -> f32 {
    const BINS: usize = 256;
    let histogram = image
        .par_chunks(WIDTH)
        .fold(
            || [0_u64; BINS],
            |mut histogram, row| {
                for &value in row {
                    let bin = (value.clamp(0.0, 1.0) * (BINS - 1) as f32).round() as usize;
                    if let Some(count) = histogram.get_mut(bin) {
                        *count += 1;
                    }
                }
                histogram
            },
        )
        .reduce(
            || [0_u64; BINS],
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(b) {
                    *x += y;
                }
                a
            },
        );
    let total: u64 = histogram.iter().sum();
    let weighted_total: f64 = histogram
        .iter()
        .enumerate()
        .map(|(bin, &n)| bin as f64 * n as f64)
        .sum();
    let (mut below, mut weighted_below) = (0_u64, 0.0);
    let (mut best_bin, mut best_spread) = (BINS / 2, -1.0);
    for (bin, &count) in histogram.iter().enumerate() {
        below += count;
        weighted_below += bin as f64 * count as f64;
        let above = total - below;
        if below == 0 || above == 0 {
            continue;
        }
        let mean_below = weighted_below / below as f64;
        let mean_above = (weighted_total - weighted_below) / above as f64;
        let spread = below as f64 * above as f64 * (mean_below - mean_above).powi(2);
        if spread > best_spread {
            (best_bin, best_spread) = (bin, spread);
        }
    }
    // Pixels in the chosen bin belong to the lower class.
    (best_bin as f32 + 0.5) / (BINS - 1) as f32
}

/// Counts 4-connected components of a mask, reusing its buffers between
/// frames.
#[derive(Default)]
struct Components {
    visited: Vec<bool>,
    stack: Vec<usize>,
}

impl Components {
    /// Returns how many components have at least `min_area` pixels, and how
    /// many pixels are set in all.
    fn count(&mut self, mask: &[u8], width: usize, min_area: usize) -> (usize, usize) {
        let Self { visited, stack } = self;
        visited.clear();
        visited.resize(mask.len(), false);
        if width == 0 {
            return (0, 0);
        }
        let (mut components, mut foreground) = (0, 0);
        for start in 0..mask.len() {
            if mask[start] == 0 || visited[start] {
                continue;
            }
            visited[start] = true;
            stack.push(start);
            let mut area = 0;
            while let Some(index) = stack.pop() {
                area += 1;
                let x = index % width;
                let neighbours = [
                    (x > 0).then(|| index - 1),
                    (x + 1 < width).then_some(index + 1),
                    index.checked_sub(width),
                    Some(index + width),
                ];
                for next in neighbours.into_iter().flatten() {
                    if mask.get(next).is_some_and(|&m| m != 0) && !visited[next] {
                        visited[next] = true;
                        stack.push(next);
                    }
                }
            }
            foreground += area;
            if area >= min_area {
                components += 1;
            }
        }
        (components, foreground)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_finds_the_blobs_in_a_frame() {
        for seed in 1..20 {
            let mut pipeline = Pipeline::new(seed, Kernel::Detection);
            let found = pipeline.process(1);
            let blobs = pipeline.scene.blobs.len();
            // Overlapping blobs merge into one object, so fewer may be found.
            assert!(
                (1..=blobs).contains(&found),
                "seed {seed}: {found} of {blobs}"
            );
        }
    }

    #[test]
    fn the_same_seed_renders_the_same_video() {
        let (mut a, mut b) = (
            Pipeline::new(9, Kernel::Detection),
            Pipeline::new(9, Kernel::Detection),
        );
        a.process(3);
        b.process(3);
        assert_eq!(a.frame, b.frame);
        assert_eq!(a.objects_total, b.objects_total);
        let mut other = Pipeline::new(10, Kernel::Detection);
        other.process(3);
        assert_ne!(a.frame, other.frame);
    }

    #[test]
    fn segmentation_splits_noise_from_blobs() {
        let mut pipeline = Pipeline::new(4, Kernel::Segmentation);
        let found = pipeline.process(1);
        let level = pipeline.threshold_sum;
        assert!(level > 0.25 && level < 0.9, "threshold {level}");
        assert!(found >= 1 && found <= pipeline.scene.blobs.len(), "{found}");
    }

    #[test]
    fn background_subtraction_sees_only_motion() {
        let mut pipeline = Pipeline::new(6, Kernel::BackgroundSubtraction);
        assert_eq!(pipeline.process(1), 0, "the first frame is the background");
        pipeline.process(10);
        assert!(pipeline.objects_total > 0);
    }

    #[test]
    fn components_ignore_specks_and_count_regions() {
        #[rustfmt::skip]
        let mask = [
            1, 1, 0, 0, 1,
            1, 1, 0, 0, 0,
            0, 0, 0, 1, 1,
            0, 0, 0, 1, 1,
        ];
        let mut components = Components::default();
        assert_eq!(components.count(&mask, 5, 2), (2, 9));
        assert_eq!(components.count(&mask, 5, 1), (3, 9));
        assert_eq!(components.count(&[], 5, 1), (0, 0));
        assert_eq!(components.count(&mask, 0, 1), (0, 0));
    }

    #[test]
    fn otsu_picks_a_level_between_two_modes() {
        let mut image = vec![0.2_f32; 1000];
        image.extend(std::iter::repeat_n(0.8, 300));
        let level = otsu_threshold(&image);
        assert!(level > 0.2 && level < 0.8, "{level}");
        assert!((0.0..=1.0).contains(&otsu_threshold(&[])));
    }

    #[test]
    fn blobs_bounce_inside_the_frame() {
        assert_eq!(bounce(-3.0, -2.0, 5.0, 100.0), (5.0, 2.0));
        assert_eq!(bounce(120.0, 2.0, 5.0, 100.0), (100.0, -2.0));
        assert_eq!(bounce(50.0, 2.0, 5.0, 100.0), (50.0, 2.0));
    }
}
