//! The chat service: one turn of the tool loop per request.
