//! The mock ML job: picks a kernel by algorithm name, runs it and sums up the
//! fit. Holds the linear classifier (trained by full-batch gradient descent
//! on synthetic, nearly separable data) and the small vector helpers the
//! kernels share; k-means and PCA live in [`super::unsupervised`].

use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde_json::{Value, json};

use super::unsupervised::{KMeans, Pca};
use super::{normal, round_to, run_paced};
use crate::tasks::{TaskContext, TaskError};

/// Rows each parallel work item handles.
pub(super) const CHUNK_ROWS: usize = 512;

/// Which kernel an algorithm name runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    Classifier(Loss),
    KMeans,
    Pca,
}

impl Kernel {
    /// Picks the kernel for a name; unknown names train the classifier.
    fn for_algorithm(algorithm: &str) -> Self {
        let name = algorithm.to_ascii_lowercase();
        if name.contains("k-means") || name.contains("kmeans") {
            Self::KMeans
        } else if name.contains("pca") || name.contains("principal component") {
            Self::Pca
        } else if name.contains("svm") || name.contains("support vector") {
            Self::Classifier(Loss::Hinge)
        } else {
            Self::Classifier(Loss::Logistic)
        }
    }
}

/// Runs the ML job; see [`super::run_ml`].
pub(super) fn run(
    ctx: &TaskContext,
    duration: Duration,
    algorithm: &str,
) -> Result<Value, TaskError> {
    let start = Instant::now();
    ctx.checkpoint()?;
    let seed = ctx.task_id.0;
    let mut summary = match Kernel::for_algorithm(algorithm) {
        Kernel::Classifier(loss) => {
            let mut model = Classifier::new(seed, loss);
            let paced = run_paced(ctx, start, duration, |epochs| model.train(epochs))?;
            let accuracy = super::in_pool(|| model.accuracy());
            json!({
                "kernel": loss.kernel_name(),
                "samples": model.train_y.len() + model.test_y.len(),
                "features": model.features,
                "epochs": paced.units,
                "loss": round_to(model.last_loss, 4),
                "accuracy": round_to(accuracy, 4),
                "duration_ms": paced.elapsed_ms(),
            })
        }
        Kernel::KMeans => {
            let mut model = KMeans::new(seed);
            let paced = run_paced(ctx, start, duration, |iterations| model.iterate(iterations))?;
            json!({
                "kernel": "k_means",
                "samples": model.samples(),
                "features": model.features,
                "clusters": model.clusters,
                "epochs": paced.units,
                "restarts": model.restarts,
                "inertia": round_to(model.best_inertia(), 3),
                "duration_ms": paced.elapsed_ms(),
            })
        }
        Kernel::Pca => {
            let mut model = Pca::new(seed);
            let paced = run_paced(ctx, start, duration, |iterations| model.iterate(iterations))?;
            let ratios = model.explained_variance_ratios();
            json!({
                "kernel": "power_iteration_pca",
                "samples": model.samples(),
                "features": model.features,
                "components": ratios.len(),
                "epochs": paced.units,
                "explained_variance": round_to(ratios.iter().sum(), 4),
                "component_variance_ratios": ratios.iter().map(|r| round_to(*r, 4)).collect::<Vec<_>>(),
                "duration_ms": paced.elapsed_ms(),
            })
        }
    };
    if let Value::Object(map) = &mut summary {
        map.insert("algorithm".to_owned(), Value::from(algorithm));
    }
    Ok(summary)
}

/// Adds `b` into `a` element by element.
pub(super) fn add_into(a: &mut [f64], b: &[f64]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

/// Squared Euclidean distance between two equal-length slices.
pub(super) fn squared_distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Dot product of two equal-length slices.
pub(super) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The loss a linear classifier minimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loss {
    /// Logistic regression.
    Logistic,
    /// A linear SVM (hinge loss with L2 regularisation).
    Hinge,
}

impl Loss {
    fn kernel_name(self) -> &'static str {
        match self {
            Self::Logistic => "logistic_regression",
            Self::Hinge => "linear_svm",
        }
    }

    /// The loss and its derivative by the score `z`, for a label `y` of ±1.
    fn eval(self, y: f64, z: f64) -> (f64, f64) {
        let margin = y * z;
        match self {
            Self::Logistic => {
                // log(1 + e^-m), written to stay finite for large |m|.
                let loss = if margin > 0.0 {
                    (-margin).exp().ln_1p()
                } else {
                    -margin + margin.exp().ln_1p()
                };
                let sigmoid_neg = 1.0 / (1.0 + margin.exp());
                (loss, -y * sigmoid_neg)
            }
            Self::Hinge if margin < 1.0 => (1.0 - margin, -y),
            Self::Hinge => (0.0, 0.0),
        }
    }

    fn learning_rate(self) -> f64 {
        match self {
            Self::Logistic => 2.0,
            Self::Hinge => 0.5,
        }
    }

    fn l2(self) -> f64 {
        match self {
            Self::Logistic => 0.0,
            Self::Hinge => 1e-3,
        }
    }
}

/// A linear classifier on a synthetic, linearly separable dataset with a
/// little label noise, split into training and test rows.
struct Classifier {
    loss: Loss,
    features: usize,
    train_x: Vec<f64>,
    train_y: Vec<f64>,
    test_x: Vec<f64>,
    test_y: Vec<f64>,
    /// Feature weights, then the bias.
    weights: Vec<f64>,
    last_loss: f64,
}

impl Classifier {
    const FEATURES: usize = 16;
    const TRAIN_ROWS: usize = 6144;
    const TEST_ROWS: usize = 2048;
    /// Share of labels flipped to make the data less than perfect.
    const LABEL_NOISE: f64 = 0.03;

    fn new(seed: u64, loss: Loss) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let features = Self::FEATURES;
        let truth: Vec<f64> = (0..features).map(|_| normal(&mut rng)).collect();
        let bias = 0.2 * normal(&mut rng);
        let mut sample = |rows: usize| {
            let mut xs = Vec::with_capacity(rows * features);
            let mut ys = Vec::with_capacity(rows);
            for _ in 0..rows {
                let row: Vec<f64> = (0..features).map(|_| rng.f64() * 2.0 - 1.0).collect();
                let mut label = if dot(&truth, &row) + bias > 0.0 {
                    1.0
                } else {
                    -1.0
                };
                if rng.f64() < Self::LABEL_NOISE {
                    label = -label;
                }
                xs.extend_from_slice(&row);
                ys.push(label);
            }
            (xs, ys)
        };
        let (train_x, train_y) = sample(Self::TRAIN_ROWS);
        let (test_x, test_y) = sample(Self::TEST_ROWS);
        Self {
            loss,
            features,
            train_x,
            train_y,
            test_x,
            test_y,
            weights: vec![0.0; features + 1],
            last_loss: f64::NAN,
        }
    }

    /// Runs `epochs` full-batch gradient steps.
    fn train(&mut self, epochs: u32) {
        let features = self.features;
        let rows = self.train_y.len().max(1) as f64;
        let (learning_rate, l2) = (self.loss.learning_rate(), self.loss.l2());
        for _ in 0..epochs {
            let (weights, loss) = (&self.weights, self.loss);
            let (gradient, total_loss) = self
                .train_x
                .par_chunks(CHUNK_ROWS * features)
                .zip(self.train_y.par_chunks(CHUNK_ROWS))
                .map(|(xs, ys)| {
                    let mut gradient = vec![0.0; features + 1];
                    let mut total = 0.0;
                    for (row, &y) in xs.chunks_exact(features).zip(ys) {
                        let z = dot(weights, row) + weights.get(features).copied().unwrap_or(0.0);
                        let (value, slope) = loss.eval(y, z);
                        total += value;
                        for (g, x) in gradient.iter_mut().zip(row) {
                            *g += slope * x;
                        }
                        if let Some(g) = gradient.get_mut(features) {
                            *g += slope;
                        }
                    }
                    (gradient, total)
                })
                .reduce(
                    || (vec![0.0; features + 1], 0.0),
                    |(mut a, la), (b, lb)| {
                        add_into(&mut a, &b);
                        (a, la + lb)
                    },
                );
            for (index, (w, g)) in self.weights.iter_mut().zip(&gradient).enumerate() {
                let decay = if index < features { l2 * *w } else { 0.0 };
                *w -= learning_rate * (g / rows + decay);
            }
            self.last_loss = total_loss / rows;
        }
    }

    /// Share of test rows classified correctly.
    fn accuracy(&self) -> f64 {
        let features = self.features;
        let bias = self.weights.get(features).copied().unwrap_or(0.0);
        let correct: usize = self
            .test_x
            .par_chunks(features)
            .zip(self.test_y.par_iter())
            .filter(|(row, y)| (dot(&self.weights, row) + bias) * **y > 0.0)
            .count();
        correct as f64 / self.test_y.len().max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classifiers_learn_their_separable_data() {
        for loss in [Loss::Logistic, Loss::Hinge] {
            let mut model = Classifier::new(7, loss);
            let untrained_loss = {
                model.train(1);
                model.last_loss
            };
            model.train(60);
            let accuracy = model.accuracy();
            assert!(accuracy > 0.8, "{loss:?} accuracy {accuracy}");
            assert!(
                model.last_loss < untrained_loss,
                "{loss:?} loss did not fall"
            );
        }
    }

    #[test]
    fn names_pick_kernels() {
        assert_eq!(Kernel::for_algorithm("K-Means Clustering"), Kernel::KMeans);
        assert_eq!(
            Kernel::for_algorithm("Principal Component Analysis (PCA)"),
            Kernel::Pca
        );
        assert_eq!(
            Kernel::for_algorithm("Support Vector Machines (SVM)"),
            Kernel::Classifier(Loss::Hinge)
        );
        assert_eq!(
            Kernel::for_algorithm("Random Forest"),
            Kernel::Classifier(Loss::Logistic)
        );
        assert_eq!(
            Kernel::for_algorithm("anything"),
            Kernel::Classifier(Loss::Logistic)
        );
    }
}
