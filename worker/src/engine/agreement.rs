//! How closely two extractions of the same texts agree, layer by layer: the
//! measure behind the device checks (a device and precision against the CPU
//! in f32).

use super::ExtractedFeatures;

/// One layer's agreement between a reference and a candidate extraction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerAgreement {
    /// Layer index (0 = embeddings).
    pub layer: usize,
    /// Largest |difference| over texts and dimensions, relative to the
    /// layer's largest |reference| value.
    pub rel: f64,
    /// Smallest cosine between a text's reference and candidate vectors.
    pub cos: f64,
}

/// Errors comparing two extractions.
#[derive(Debug, thiserror::Error)]
pub enum AgreementError {
    /// The two feature tensors differ in shape.
    #[error("features of shape {reference:?} and {candidate:?} cannot be compared")]
    Shape {
        /// `[texts, layers, dim]` of the reference.
        reference: (usize, usize, usize),
        /// `[texts, layers, dim]` of the candidate.
        candidate: (usize, usize, usize),
    },
    /// The candidate holds NaN or infinity.
    #[error("non-finite feature at text {text}, layer {layer}, dimension {dim}: the forward pass produced NaN or inf")]
    NonFinite {
        /// Text index.
        text: usize,
        /// Layer index.
        layer: usize,
        /// Feature index.
        dim: usize,
    },
}

/// Compare `candidate` with `reference` layer by layer (computed in f64).
pub fn layer_agreement(
    reference: &ExtractedFeatures,
    candidate: &ExtractedFeatures,
) -> Result<Vec<LayerAgreement>, AgreementError> {
    let (r, c) = (reference.data.dim(), candidate.data.dim());
    if r != c {
        return Err(AgreementError::Shape {
            reference: r,
            candidate: c,
        });
    }
    if let Some(((text, layer, dim), _)) =
        candidate.data.indexed_iter().find(|(_, x)| !x.is_finite())
    {
        return Err(AgreementError::NonFinite { text, layer, dim });
    }
    let (n, layers, d) = r;
    let mut out = Vec::with_capacity(layers);
    for layer in 0..layers {
        let (mut max_ref, mut max_diff, mut min_cos) = (0f64, 0f64, 1f64);
        for t in 0..n {
            let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
            for k in 0..d {
                let a = reference.data[[t, layer, k]] as f64;
                let b = candidate.data[[t, layer, k]] as f64;
                max_ref = max_ref.max(a.abs());
                max_diff = max_diff.max((a - b).abs());
                dot += a * b;
                na += a * a;
                nb += b * b;
            }
            min_cos = min_cos.min(dot / (na.sqrt() * nb.sqrt()).max(f64::MIN_POSITIVE));
        }
        out.push(LayerAgreement {
            layer,
            rel: max_diff / max_ref.max(f64::MIN_POSITIVE),
            cos: min_cos,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    fn features(data: Array3<f32>) -> ExtractedFeatures {
        let n = data.dim().0;
        ExtractedFeatures {
            data,
            token_counts: vec![1; n],
        }
    }

    #[test]
    fn identical_features_agree_exactly_and_a_flipped_sign_is_caught() {
        let a = Array3::from_shape_fn((3, 2, 4), |(t, l, k)| (t + 2 * l + 3 * k) as f32 + 0.5);
        let same = layer_agreement(&features(a.clone()), &features(a.clone())).unwrap();
        assert!(same
            .iter()
            .all(|l| l.rel == 0.0 && (l.cos - 1.0).abs() < 1e-12));
        let mut b = a.clone();
        b[[1, 1, 0]] = -b[[1, 1, 0]];
        let got = layer_agreement(&features(a.clone()), &features(b)).unwrap();
        assert_eq!(got[0].rel, 0.0);
        // |2·x| / max|ref| on layer 1: x = 1 + 2 + 0 + 0.5, max = 2 + 2 + 9 + 0.5.
        assert!((got[1].rel - 7.0 / 13.5).abs() < 1e-12, "{got:?}");
        assert!(got[1].cos < 1.0);
    }

    #[test]
    fn shape_mismatch_and_nan_are_errors() {
        let a = Array3::<f32>::ones((2, 2, 2));
        let b = Array3::<f32>::ones((2, 3, 2));
        assert!(matches!(
            layer_agreement(&features(a.clone()), &features(b)),
            Err(AgreementError::Shape { .. })
        ));
        let mut c = a.clone();
        c[[1, 0, 1]] = f32::NAN;
        let err = layer_agreement(&features(a), &features(c)).unwrap_err();
        assert!(matches!(
            err,
            AgreementError::NonFinite {
                text: 1,
                layer: 0,
                dim: 1
            }
        ));
    }
}
