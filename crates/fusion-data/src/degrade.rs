//! Degradations that make a dataset a real fusion test: PCA image degradation (MultiBench's
//! AV-MNIST keeps 25 % of the images' energy) and background noise at a seeded SNR.

use fusion_image::SplitMix64;

/// Principal components of a set of vectors, largest variance first.
#[derive(Debug, Clone, PartialEq)]
pub struct Pca {
    /// Mean vector.
    pub mean: Vec<f64>,
    /// Orthonormal components, each of the data's dimension.
    pub components: Vec<Vec<f64>>,
    /// Variance along each component.
    pub variances: Vec<f64>,
    /// Total variance of the data (trace of the covariance).
    pub total_variance: f64,
}

impl Pca {
    /// Fits the `max_components` leading components of `rows` (each of length `dim`) by
    /// subspace iteration on the covariance with a Rayleigh–Ritz step (exact within the
    /// subspace, which converges to the leading eigenvectors).
    pub fn fit(rows: &[Vec<f64>], max_components: usize, seed: u64) -> Self {
        let n = rows.len().max(1) as f64;
        let dim = rows.first().map_or(0, Vec::len);
        let mut mean = vec![0.0; dim];
        for row in rows {
            mean.iter_mut().zip(row).for_each(|(m, x)| *m += x / n);
        }
        let centred: Vec<Vec<f64>> = rows
            .iter()
            .map(|row| row.iter().zip(&mean).map(|(x, m)| x - m).collect())
            .collect();
        // C·v either through the covariance (many rows) or as Xᵀ(X·v)/n (few rows).
        let covariance = (dim <= 2 * rows.len()).then(|| {
            let mut c = vec![0.0; dim * dim];
            for row in &centred {
                for (i, ci) in row.iter().enumerate().filter(|(_, c)| **c != 0.0) {
                    let line = &mut c[i * dim..(i + 1) * dim];
                    line.iter_mut().zip(row).for_each(|(c, cj)| *c += ci * cj / n);
                }
            }
            c
        });
        let times = |v: &[f64]| -> Vec<f64> {
            match &covariance {
                Some(c) => (0..dim)
                    .map(|i| c[i * dim..(i + 1) * dim].iter().zip(v).map(|(c, x)| c * x).sum())
                    .collect(),
                None => {
                    let mut out = vec![0.0; dim];
                    for row in &centred {
                        let weight = dot(row, v) / n;
                        out.iter_mut().zip(row).for_each(|(o, x)| *o += weight * x);
                    }
                    out
                }
            }
        };
        let total_variance = centred.iter().map(|r| dot(r, r)).sum::<f64>() / n;
        let block = max_components.min(dim);
        let mut rng = SplitMix64(seed);
        let mut basis: Vec<Vec<f64>> = (0..block)
            .map(|_| {
                (0..dim)
                    .map(|_| rng.next_u64() as f64 / u64::MAX as f64 - 0.5)
                    .collect()
            })
            .collect();
        orthonormalise(&mut basis);
        for _ in 0..40 {
            basis = basis.iter().map(|v| times(v)).collect();
            orthonormalise(&mut basis);
        }
        // Rayleigh–Ritz: diagonalise the covariance restricted to the subspace.
        let images: Vec<Vec<f64>> = basis.iter().map(|v| times(v)).collect();
        let mut small = vec![0.0; block * block];
        for i in 0..block {
            for j in 0..block {
                small[i * block + j] = dot(&basis[i], &images[j]);
            }
        }
        let (values, vectors) = jacobi_eigen(&mut small, block);
        let mut order: Vec<usize> = (0..block).collect();
        order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
        let components = order
            .iter()
            .map(|&k| {
                let mut v = vec![0.0; dim];
                for (j, b) in basis.iter().enumerate() {
                    let w = vectors[j * block + k];
                    v.iter_mut().zip(b).for_each(|(x, y)| *x += w * y);
                }
                v
            })
            .collect();
        Self {
            mean,
            variances: order.iter().map(|&k| values[k].max(0.0)).collect(),
            components,
            total_variance,
        }
    }

    /// The fewest leading components whose variance reaches `fraction` of the total, or
    /// `None` when the fitted components do not reach it.
    pub fn components_for(&self, fraction: f64) -> Option<usize> {
        let mut sum = 0.0;
        for (k, v) in self.variances.iter().enumerate() {
            sum += v;
            if sum >= fraction * self.total_variance {
                return Some(k + 1);
            }
        }
        None
    }

    /// `row` projected on the first `k` components and mapped back.
    pub fn reconstruct(&self, row: &[f64], k: usize) -> Vec<f64> {
        let centred: Vec<f64> = row.iter().zip(&self.mean).map(|(x, m)| x - m).collect();
        let mut out = self.mean.clone();
        for component in self.components.iter().take(k) {
            let weight = dot(component, &centred);
            out.iter_mut().zip(component).for_each(|(o, c)| *o += weight * c);
        }
        out
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Modified Gram–Schmidt; a vector that collapses (the covariance has lower rank than the
/// block) is replaced by the first unit axis that is independent of the others.
fn orthonormalise(vectors: &mut [Vec<f64>]) {
    let dim = vectors.first().map_or(0, Vec::len);
    let mut next_axis = 0;
    for i in 0..vectors.len() {
        loop {
            let (done, rest) = vectors.split_at_mut(i);
            let before = dot(&rest[0], &rest[0]).sqrt();
            // Twice: one pass loses orthogonality when most of the vector is projected away.
            for _ in 0..2 {
                for q in done.iter() {
                    let projection = dot(q, &rest[0]);
                    rest[0].iter_mut().zip(q).for_each(|(x, q)| *x -= projection * q);
                }
            }
            let norm = dot(&rest[0], &rest[0]).sqrt();
            if norm > 1e-8 * before || next_axis >= dim {
                rest[0].iter_mut().for_each(|x| *x /= norm.max(f64::MIN_POSITIVE));
                break;
            }
            rest[0] = (0..dim).map(|d| f64::from(u8::from(d == next_axis))).collect();
            next_axis += 1;
        }
    }
}

/// Eigen-decomposition of a symmetric `n × n` matrix by cyclic Jacobi rotations: the
/// eigenvalues and the eigenvectors as columns of a row-major matrix.
fn jacobi_eigen(a: &mut [f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v: Vec<f64> = (0..n * n).map(|i| f64::from(u8::from(i / n == i % n))).collect();
    for _ in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j].powi(2))
            .sum();
        if off < 1e-22 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let (c, s) = (1.0 / (t * t + 1.0).sqrt(), t / (t * t + 1.0).sqrt());
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

/// `samples` with white Gaussian noise added at `snr_db` (signal power over noise power,
/// the signal's power measured over the whole clip), seeded.
pub fn add_noise(samples: &[f32], snr_db: f64, rng: &mut SplitMix64) -> Vec<f32> {
    let power = samples.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / samples.len().max(1) as f64;
    let sigma = (power / 10f64.powf(snr_db / 10.0)).sqrt();
    samples
        .iter()
        .map(|s| {
            // Box–Muller.
            let (u, v) = (rng.next_f64().max(f64::MIN_POSITIVE), rng.next_f64());
            let gaussian = (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos();
            (f64::from(*s) + sigma * gaussian) as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pca_finds_the_axes_of_a_stretched_cloud() {
        // Points along (1, 1, 0)/√2 with variance 9, along (1, -1, 0)/√2 with variance 1.
        let mut rng = SplitMix64(1);
        let mut gaussian = || {
            let (u, v) = (rng.next_f64(), rng.next_f64());
            (-2.0 * u.max(1e-300).ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        };
        let rows: Vec<Vec<f64>> = (0..4000)
            .map(|_| {
                let (a, b) = (3.0 * gaussian(), gaussian());
                let s = std::f64::consts::FRAC_1_SQRT_2;
                vec![5.0 + s * (a + b), -2.0 + s * (a - b), 0.0]
            })
            .collect();
        let pca = Pca::fit(&rows, 3, 0);
        assert!(
            (pca.variances[0] / pca.total_variance - 0.9).abs() < 0.02,
            "{:?}",
            pca.variances
        );
        assert!((pca.components[0][0].abs() - std::f64::consts::FRAC_1_SQRT_2).abs() < 0.01);
        assert!(pca.variances[2].abs() < 1e-9);
        assert_eq!(pca.components_for(0.5), Some(1));
        assert_eq!(pca.components_for(0.99), Some(2));
        // One component keeps the point's position along the main axis only.
        let back = pca.reconstruct(&[5.0 + 2.0, -2.0 + 2.0, 0.0], 1);
        assert!((back[0] - 7.0).abs() < 0.05 && (back[1] + 0.0).abs() < 0.05, "{back:?}");
    }

    #[test]
    fn noise_has_the_requested_power() {
        let signal: Vec<f32> = (0..80_000).map(|i| (i as f32 * 0.05).sin() * 0.5).collect();
        let noisy = add_noise(&signal, 6.0, &mut SplitMix64(3));
        let power = |x: &[f32]| x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / x.len() as f64;
        let noise: Vec<f32> = noisy.iter().zip(&signal).map(|(a, b)| a - b).collect();
        let snr = 10.0 * (power(&signal) / power(&noise)).log10();
        assert!((snr - 6.0).abs() < 0.1, "{snr}");
        assert_eq!(noisy, add_noise(&signal, 6.0, &mut SplitMix64(3)), "seeded");
    }
}
