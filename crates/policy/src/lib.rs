//! Authorization decisions outside the model.
