namespace BitDeltaNative.Autograd;

/// <summary>
/// A minimal reverse-mode tape: the forward pass, as it runs each op, records a closure that applies that op's
/// backward rule (one of the *Grad twins) to gradient buffers the caller owns; <see cref="Backward"/> runs the
/// closures last to first, so each sees the gradient of its output complete before it propagates to its inputs.
/// Plain data: the list of closures, nothing else (no graph, no tensor type). A value used twice must have its
/// gradients summed by the closures that write it (e.g. <see cref="LinearGrad.Twin"/> with accumulate).
/// </summary>
public sealed class Tape
{
    public readonly List<Action> Steps = [];

    public void Record(Action backward) => Steps.Add(backward);

    /// <summary>Runs every recorded backward step in reverse order of recording, then clears the tape.</summary>
    public void Backward()
    {
        for (int i = Steps.Count - 1; i >= 0; i--) Steps[i]();
        Steps.Clear();
    }
}
