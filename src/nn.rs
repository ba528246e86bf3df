//! Fast f32 forward and backward passes (im2col + sgemm, parallel over the batch).
