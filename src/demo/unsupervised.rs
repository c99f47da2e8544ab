//! Unsupervised kernels for the mock ML job: k-means with restarts, and PCA
//! by orthogonal (block power) iteration, each on its own synthetic dataset.

use rayon::prelude::*;

use super::ml::{CHUNK_ROWS, add_into, dot, squared_distance};
use super::normal;

/// Lloyd's k-means on points drawn around a few hidden centres. When a run
/// converges it restarts from fresh k-means++ seeds and keeps the best fit.
pub(super) struct KMeans {
    rng: fastrand::Rng,
    /// Coordinates per point.
    pub(super) features: usize,
    /// Centroids fitted.
    pub(super) clusters: usize,
    points: Vec<f64>,
    centroids: Vec<f64>,
    current_inertia: f64,
    best: f64,
    /// Runs that converged and were restarted.
    pub(super) restarts: u64,
}

impl KMeans {
    const FEATURES: usize = 8;
    const POINTS: usize = 8192;
    const CLUSTERS: usize = 5;
    /// A run whose inertia improves by less than this share has converged.
    const TOLERANCE: f64 = 1e-6;

    pub(super) fn new(seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let (features, clusters) = (Self::FEATURES, Self::CLUSTERS);
        let centres: Vec<f64> = (0..clusters * features)
            .map(|_| 4.0 * normal(&mut rng))
            .collect();
        let mut points = Vec::with_capacity(Self::POINTS * features);
        for _ in 0..Self::POINTS {
            let centre = rng.usize(..clusters);
            let start = centre * features;
            for value in centres.get(start..start + features).unwrap_or_default() {
                points.push(value + normal(&mut rng));
            }
        }
        let mut model = Self {
            rng,
            features,
            clusters,
            points,
            centroids: Vec::new(),
            current_inertia: f64::INFINITY,
            best: f64::INFINITY,
            restarts: 0,
        };
        model.seed_centroids();
        model
    }

    pub(super) fn samples(&self) -> usize {
        self.points.len() / self.features.max(1)
    }

    /// Picks starting centroids by k-means++: the first is a random point,
    /// each next one a point drawn with probability proportional to its
    /// squared distance from the nearest centroid so far. Runs on the calling
    /// thread, since it is also called before the job enters the pool.
    fn seed_centroids(&mut self) {
        let (features, samples) = (self.features, self.samples());
        self.centroids.clear();
        self.current_inertia = f64::INFINITY;
        let mut nearest = vec![f64::INFINITY; samples];
        for cluster in 0..self.clusters {
            let total: f64 = nearest.iter().sum();
            let chosen = if cluster > 0 && total > 0.0 && total.is_finite() {
                let mut target = self.rng.f64() * total;
                nearest
                    .iter()
                    .position(|distance| {
                        target -= distance;
                        target < 0.0
                    })
                    .unwrap_or(samples.saturating_sub(1))
            } else {
                self.rng.usize(..samples.max(1))
            };
            let start = chosen * features;
            let Some(point) = self.points.get(start..start + features) else {
                self.centroids.extend(std::iter::repeat_n(0.0, features));
                continue;
            };
            self.centroids.extend_from_slice(point);
            for (distance, other) in nearest.iter_mut().zip(self.points.chunks_exact(features)) {
                *distance = distance.min(squared_distance(point, other));
            }
        }
    }

    /// Runs `iterations` assign-and-update rounds.
    pub(super) fn iterate(&mut self, iterations: u32) {
        for _ in 0..iterations {
            let (sums, counts, inertia) = self.assign();
            for (cluster, &count) in counts.iter().enumerate() {
                let range = cluster * self.features..(cluster + 1) * self.features;
                // An empty cluster keeps its centroid.
                if count == 0 {
                    continue;
                }
                if let (Some(centroid), Some(sum)) =
                    (self.centroids.get_mut(range.clone()), sums.get(range))
                {
                    for (c, s) in centroid.iter_mut().zip(sum) {
                        *c = s / count as f64;
                    }
                }
            }
            let improvement = self.current_inertia - inertia;
            self.current_inertia = inertia;
            if improvement.abs() <= Self::TOLERANCE * inertia.max(f64::MIN_POSITIVE) {
                self.best = self.best.min(inertia);
                self.restarts += 1;
                self.seed_centroids();
            }
        }
    }

    /// Assigns every point to its nearest centroid; returns per-cluster
    /// coordinate sums and counts, and the inertia of the assignment.
    fn assign(&self) -> (Vec<f64>, Vec<u64>, f64) {
        let (features, clusters, centroids) = (self.features, self.clusters, &self.centroids);
        self.points
            .par_chunks(CHUNK_ROWS * features)
            .map(|chunk| {
                let mut sums = vec![0.0; clusters * features];
                let mut counts = vec![0_u64; clusters];
                let mut inertia = 0.0;
                for point in chunk.chunks_exact(features) {
                    let (nearest, distance) = centroids
                        .chunks_exact(features)
                        .map(|centroid| squared_distance(centroid, point))
                        .enumerate()
                        .fold(
                            (0, f64::INFINITY),
                            |best, (i, d)| if d < best.1 { (i, d) } else { best },
                        );
                    if distance.is_finite() {
                        inertia += distance;
                    }
                    if let Some(count) = counts.get_mut(nearest) {
                        *count += 1;
                    }
                    let range = nearest * features..(nearest + 1) * features;
                    if let Some(sum) = sums.get_mut(range) {
                        add_into(sum, point);
                    }
                }
                (sums, counts, inertia)
            })
            .reduce(
                || (vec![0.0; clusters * features], vec![0; clusters], 0.0),
                |(mut sa, mut ca, ia), (sb, cb, ib)| {
                    add_into(&mut sa, &sb);
                    for (a, b) in ca.iter_mut().zip(&cb) {
                        *a += b;
                    }
                    (sa, ca, ia + ib)
                },
            )
    }

    /// The lowest inertia any run reached, including the current one.
    pub(super) fn best_inertia(&self) -> f64 {
        let best = self.best.min(self.current_inertia);
        if best.is_finite() { best } else { 0.0 }
    }
}

/// Principal components of centred data with a planted low-rank structure,
/// found by orthogonal iteration: `V <- orthonormalise(Xᵀ X V)`.
pub(super) struct Pca {
    /// Coordinates per sample.
    pub(super) features: usize,
    data: Vec<f64>,
    /// Component vectors, one row each.
    basis: Vec<f64>,
    /// Rayleigh quotients of the basis from the latest iteration.
    eigenvalues: Vec<f64>,
    total_variance: f64,
}

impl Pca {
    const FEATURES: usize = 16;
    const SAMPLES: usize = 4096;
    const LATENT: usize = 3;
    const COMPONENTS: usize = 3;
    const NOISE: f64 = 0.5;

    pub(super) fn new(seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let features = Self::FEATURES;
        let loadings: Vec<f64> = (0..Self::LATENT * features)
            .map(|_| normal(&mut rng))
            .collect();
        let mut data = Vec::with_capacity(Self::SAMPLES * features);
        for _ in 0..Self::SAMPLES {
            let factors: Vec<f64> = (0..Self::LATENT)
                .map(|l| (3.0 - l as f64) * normal(&mut rng))
                .collect();
            for feature in 0..features {
                let signal: f64 = factors
                    .iter()
                    .enumerate()
                    .map(|(l, f)| f * loadings.get(l * features + feature).copied().unwrap_or(0.0))
                    .sum();
                data.push(signal + Self::NOISE * normal(&mut rng));
            }
        }
        center_columns(&mut data, features);
        let samples = (data.len() / features).max(2);
        let total_variance = data.iter().map(|x| x * x).sum::<f64>() / (samples - 1) as f64;
        let basis: Vec<f64> = (0..Self::COMPONENTS * features)
            .map(|_| normal(&mut rng))
            .collect();
        let mut model = Self {
            features,
            data,
            basis,
            eigenvalues: vec![0.0; Self::COMPONENTS],
            total_variance,
        };
        orthonormalise(&mut model.basis, features);
        model
    }

    pub(super) fn samples(&self) -> usize {
        self.data.len() / self.features.max(1)
    }

    /// Runs `iterations` rounds of orthogonal iteration.
    pub(super) fn iterate(&mut self, iterations: u32) {
        let (features, components) = (self.features, self.eigenvalues.len());
        let denominator = (self.samples().max(2) - 1) as f64;
        for _ in 0..iterations {
            let basis = &self.basis;
            let product = self
                .data
                .par_chunks(CHUNK_ROWS * features)
                .map(|chunk| {
                    let mut product = vec![0.0; components * features];
                    for row in chunk.chunks_exact(features) {
                        for (v, w) in basis
                            .chunks_exact(features)
                            .zip(product.chunks_exact_mut(features))
                        {
                            let projection = dot(v, row);
                            for (w, x) in w.iter_mut().zip(row) {
                                *w += projection * x;
                            }
                        }
                    }
                    product
                })
                .reduce(
                    || vec![0.0; components * features],
                    |mut a, b| {
                        add_into(&mut a, &b);
                        a
                    },
                );
            for ((value, v), w) in self
                .eigenvalues
                .iter_mut()
                .zip(self.basis.chunks_exact(features))
                .zip(product.chunks_exact(features))
            {
                *value = dot(v, w) / denominator;
            }
            self.basis = product;
            orthonormalise(&mut self.basis, features);
        }
    }

    /// Share of the total variance each component explains, largest first.
    pub(super) fn explained_variance_ratios(&self) -> Vec<f64> {
        let mut ratios: Vec<f64> = self
            .eigenvalues
            .iter()
            .map(|value| {
                if self.total_variance > 0.0 {
                    (value / self.total_variance).clamp(0.0, 1.0)
                } else {
                    0.0
                }
            })
            .collect();
        ratios.sort_by(|a, b| b.total_cmp(a));
        ratios
    }
}

/// Subtracts each column's mean from a row-major matrix.
fn center_columns(data: &mut [f64], features: usize) {
    let rows = data.len() / features.max(1);
    if rows == 0 {
        return;
    }
    let mut means = vec![0.0; features];
    for row in data.chunks_exact(features) {
        add_into(&mut means, row);
    }
    for mean in &mut means {
        *mean /= rows as f64;
    }
    for row in data.chunks_exact_mut(features) {
        for (x, mean) in row.iter_mut().zip(&means) {
            *x -= mean;
        }
    }
}

/// Gram-Schmidt on the rows of `basis`. A row that collapses is replaced by
/// the first unit axis independent of the rows before it, so the basis stays
/// full rank; rows beyond the dimension are left zero.
fn orthonormalise(basis: &mut [f64], features: usize) {
    let rows = basis.len() / features.max(1);
    for i in 0..rows {
        let (done, rest) = basis.split_at_mut(i * features);
        let Some(row) = rest.get_mut(..features) else {
            return;
        };
        if project_out_and_normalise(row, done, features) {
            continue;
        }
        for axis in 0..features {
            row.fill(0.0);
            if let Some(x) = row.get_mut(axis) {
                *x = 1.0;
            }
            if project_out_and_normalise(row, done, features) {
                break;
            }
            row.fill(0.0);
        }
    }
}

/// Removes from `row` its projection on each row of `done`, then scales it
/// to unit length; false when too little of it was left to scale.
fn project_out_and_normalise(row: &mut [f64], done: &[f64], features: usize) -> bool {
    for previous in done.chunks_exact(features) {
        let projection = dot(previous, row);
        for (x, p) in row.iter_mut().zip(previous) {
            *x -= projection * p;
        }
    }
    let norm = dot(row, row).sqrt();
    if norm > 1e-9 {
        for x in row.iter_mut() {
            *x /= norm;
        }
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k_means_finds_the_planted_clusters() {
        let mut model = KMeans::new(3);
        model.iterate(200);
        assert!(model.restarts > 0, "no run converged");
        // With the right centres each point is about one unit of variance
        // per feature from its centre.
        let per_point = model.best_inertia() / model.samples() as f64;
        assert!(
            per_point < 2.0 * KMeans::FEATURES as f64,
            "inertia per point {per_point}"
        );
    }

    #[test]
    fn pca_explains_the_planted_low_rank_structure() {
        let mut model = Pca::new(5);
        model.iterate(50);
        let ratios = model.explained_variance_ratios();
        assert_eq!(ratios.len(), Pca::COMPONENTS);
        let total: f64 = ratios.iter().sum();
        assert!(total > 0.8 && total <= 1.0, "explained {total}");
        assert!(ratios.windows(2).all(|pair| pair[0] >= pair[1]));
    }

    #[test]
    fn orthonormalise_handles_degenerate_rows() {
        let mut basis = vec![2.0, 0.0, 3.0, 0.0, 0.0, 0.0];
        orthonormalise(&mut basis, 2);
        assert_eq!(basis, vec![1.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
        orthonormalise(&mut [], 0);
    }
}
