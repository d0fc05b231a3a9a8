//! `ftpgate replay`: a capture through the engine.
