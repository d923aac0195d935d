namespace BitDeltaNative;

/// <summary>
/// An error the user can act on: bad input, a missing GPU, a mismatched file. Its message is one
/// line that names the file and the field; the CLI prints it and exits non-zero, with no stack trace.
/// </summary>
public class BitDeltaException(string message, Exception? inner = null) : Exception(message, inner);
