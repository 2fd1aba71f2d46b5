pub mod locate;
pub mod diagnostic;
pub mod load;
pub mod openclaw;
pub mod raw;
