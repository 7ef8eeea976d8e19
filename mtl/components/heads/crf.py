"""Linear-chain CRF: training by the forward algorithm, decoding by Viterbi (not argmax, as PALM did)."""
import torch
from torch import nn


class CRF(nn.Module):
    """Transition scores between tags plus start/end scores; all sums in float32."""

    def __init__(self, num_tags: int) -> None:
        super().__init__()
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))
        self.start = nn.Parameter(torch.zeros(num_tags))
        self.end = nn.Parameter(torch.zeros(num_tags))

    def nll(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood over sequences with at least one position."""
        emissions, mask = emissions.float(), mask.bool()
        tags = tags.clamp(min=0) * mask  # unknown gold tags (eval only) score as tag 0
        has_words = mask[:, 0]
        loss = self._log_partition(emissions, mask) - self._gold_score(emissions, tags, mask)
        return (loss * has_words).sum() / has_words.sum().clamp(min=1)

    def _gold_score(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        emit = emissions.gather(2, tags.unsqueeze(2)).squeeze(2) * mask
        trans = self.transitions[tags[:, :-1], tags[:, 1:]] * mask[:, 1:]
        last = tags.gather(1, (mask.sum(1) - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
        return self.start[tags[:, 0]] + emit.sum(1) + trans.sum(1) + self.end[last]

    def _log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        score = self.start + emissions[:, 0]
        for t in range(1, emissions.size(1)):
            step = torch.logsumexp(score.unsqueeze(2) + self.transitions + emissions[:, t].unsqueeze(1), dim=1)
            score = torch.where(mask[:, t].unsqueeze(1), step, score)
        return torch.logsumexp(score + self.end, dim=1)

    @torch.no_grad()
    def marginals(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """P(tag at t | sequence), by forward-backward: (B, T, K), meaningful where `mask` (left-aligned) is set.
        The probability a decoded tag gets reported with."""
        return self.log_marginals(emissions, mask).exp()

    def log_marginals(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """log P(tag at t | sequence), differentiable: a CRF student matches them to a teacher's."""
        emissions, mask = emissions.float(), mask.bool()
        alphas = [self.start + emissions[:, 0]]
        for t in range(1, emissions.size(1)):
            step = torch.logsumexp(alphas[-1].unsqueeze(2) + self.transitions + emissions[:, t].unsqueeze(1), dim=1)
            alphas.append(torch.where(mask[:, t].unsqueeze(1), step, alphas[-1]))
        end = self.end.expand_as(alphas[0])
        betas = [end]
        for t in range(emissions.size(1) - 2, -1, -1):
            step = torch.logsumexp(self.transitions + (emissions[:, t + 1] + betas[0]).unsqueeze(1), dim=2)
            betas.insert(0, torch.where(mask[:, t + 1].unsqueeze(1), step, end))
        log_z = torch.logsumexp(alphas[-1] + self.end, dim=1).view(-1, 1, 1)
        return torch.stack(alphas, 1) + torch.stack(betas, 1) - log_z

    @torch.no_grad()
    def viterbi(self, emissions: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        """Best tag path of each sequence, as long as its mask."""
        emissions, mask = emissions.float(), mask.bool()
        score = self.start + emissions[:, 0]
        pointers = []
        for t in range(1, emissions.size(1)):
            candidates = score.unsqueeze(2) + self.transitions
            best, pointer = candidates.max(dim=1)
            score = torch.where(mask[:, t].unsqueeze(1), best + emissions[:, t], score)
            pointers.append(pointer)
        score = score + self.end
        lengths = mask.sum(1).tolist()
        paths = []
        for row, length in enumerate(lengths):
            if length == 0:
                paths.append([])
                continue
            tag = int(score[row].argmax())
            path = [tag]
            for t in range(length - 2, -1, -1):
                tag = int(pointers[t][row, tag])
                path.append(tag)
            paths.append(path[::-1])
        return paths
